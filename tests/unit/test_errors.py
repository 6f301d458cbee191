from __future__ import annotations

import pytest

from agent.errors import CodedError


def test_a_refusal_carries_its_code_and_one_line_message() -> None:
    with pytest.raises(CodedError, match="^no such key$") as info:
        raise CodedError("bad-key", "no such key")
    assert (info.value.code, info.value.message) == ("bad-key", "no such key")
    assert info.value.as_dict() == {"code": "bad-key", "message": "no such key"}


def test_old_names_can_be_subclasses_caught_as_one() -> None:
    class ControlError(CodedError):
        pass

    with pytest.raises(CodedError):
        raise ControlError("refused", "not allowed")
