"""Operations-room accounts: users, roles, passwords, TOTP, lockout and sessions. Knows no HTTP."""
