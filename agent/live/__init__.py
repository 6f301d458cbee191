"""Live view: the unit publishes a low-resolution WebRTC rendition to headquarters while an operator watches."""
