"""The one exception type for bad input: its message is printed as a single line, exit code 2."""


class UserInputError(Exception):
    """A problem the user can fix (a parameter, a path, a schema); the message says what and how."""

    exit_code = 2

    def __init__(self, message: str):
        # Multi-line messages would break the "one clear line" contract; fold them.
        super().__init__(" ".join(str(message).split()))
