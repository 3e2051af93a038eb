# The one exception type every decoder in firmware/lib raises for malformed
# input. Callers catch DecodeError (never a bare Exception) so that a
# programming error is not mistaken for line noise.


class DecodeError(ValueError):
    """Malformed or unexpected bytes. args[0] is a short reason."""
