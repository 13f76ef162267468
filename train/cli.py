"""What the command-line tools of train/ share: the parser (one-line errors, exit status 2), the
help formatter, and the checks of devices and output paths. Importing it costs no torch, so
--help and argument errors are answered at once; what needs torch imports it when called."""
import argparse
import os
import sys


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


def given_dests(parser: argparse.ArgumentParser, argv) -> set:
    """The destinations of the options given in ``argv`` (whatever their value: a flag given
    with its default value counts). ``parser`` must take an empty command line."""
    unset = object()
    namespace = argparse.Namespace(**{dest: unset for dest in vars(parser.parse_args([]))})
    parser.parse_args(argv, namespace=namespace)  # argparse fills only what is not there yet
    return {dest for dest, value in vars(namespace).items() if value is not unset}


def one_line(error: BaseException) -> str:
    """An exception's message on one line (a library's message may span several)."""
    return " ".join(str(error).split())


def run_command(prog: str, run, args) -> int:
    """run(args), with a UsageError (and its subclasses: bad checkpoints, bad data) reported as
    one line on stderr and exit status 2."""
    try:
        return run(args)
    except UsageError as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------------------------
# devices and output paths
# --------------------------------------------------------------------------------------------


def parse_devices(texts, flag: str, towers: int = 1, variant: str = "torchvision") -> list:
    """``texts`` (device names) as torch.devices, checked as alexnet() checks its devices (a
    network of ``towers`` towers), or a UsageError naming ``flag``."""
    from alexnet_kernels.models.placement import check_devices

    try:
        return check_devices(list(texts), towers, variant, name=flag)
    except ValueError as e:
        raise UsageError(str(e)) from None


def parse_device(text: str, flag: str = "--device"):
    """One device, for a tool that runs a network on one device."""
    return parse_devices([text], flag)[0]


def checkpoint_file(path: str) -> str:
    """``path`` if it is a file (what is in it, checkpoint.read says), else a UsageError: checked
    first, before the outputs and the slow loads."""
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such checkpoint file")
    return path


def output_dir(path: str, flag: str) -> str:
    """``path`` as a directory to write into (made when missing), or a UsageError naming flag."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path}: exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot make the directory ({e.strerror or e})") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"{flag} {path}: not writable")
    return path


def output_file(path: str, flag: str, suffix: str, overwrite: bool = False) -> str:
    """``path`` if a ``suffix`` file (".png", ".npz") may be written there: its directory is made
    when missing; an existing file is replaced only with ``overwrite``. Else a UsageError naming
    ``flag``. Checked before any slow work, so that a typo costs nothing."""
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a directory; give a file name ending in {suffix}")
    if not path.lower().endswith(suffix):
        raise UsageError(f"{flag} {path}: must name a {suffix} file")
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot make its directory {parent} ({e.strerror or e})") from None
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{flag} {path}: its directory {parent} is not writable")
    if os.path.exists(path) and not overwrite:
        raise UsageError(f"{flag} {path}: exists; give --overwrite to replace it, or another {flag}")
    return path
