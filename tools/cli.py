"""Command-line conventions shared by the host tools (CPython only).

A usage error is one line on stderr, "TOOL: REASON (see TOOL.py --help)", and
exit status 2 -- no usage dump, no traceback; other errors a line "TOOL:
REASON" (fail()). --help prints the full help and exits 0.
"""
import argparse
import sys

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        name = self.prog[:-3] if self.prog.endswith(".py") else self.prog
        self.exit(EXIT_USAGE, "%s: %s (see %s --help)\n" % (name, message, self.prog))


def fail(prog, message, status=EXIT_USAGE):
    """One line "PROG: MESSAGE" on stderr; returns status (for `return fail(...)`)."""
    sys.stderr.write("%s: %s\n" % (prog, " ".join(str(message).split())))
    return status


def number(kind, low=None, high=None, what="a number"):
    """argparse type: kind (int / float) within [low, high], with a clear reason."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not %s" % (text, what)) from None
        if (low is not None and v < low) or (high is not None and v > high):
            if high is None:
                raise argparse.ArgumentTypeError("%s must be >= %s" % (text, low))
            if low is None:
                raise argparse.ArgumentTypeError("%s must be <= %s" % (text, high))
            raise argparse.ArgumentTypeError("%s must be %s..%s" % (text, low, high))
        return v
    parse.__name__ = kind.__name__
    return parse
