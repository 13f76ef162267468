"""What the command-line tools of train/ share: one-line errors with exit status 2, help that
shows a flag's default only where it has one, and the argument types they all take."""
import argparse


class UsageError(Exception):
    """A bad argument, checkpoint, data directory or output path: reported as one line, exit
    status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, not argparse's usage block: "train/run.py: error: ... (see --help)".
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless it has none (None or False: the help text says what
    happens then)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class RawDescriptionHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """HelpFormatter that keeps the description's own line breaks."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
