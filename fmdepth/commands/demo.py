"""`fmdepth demo` (under construction in this session; replaced by its owner)."""
HELP = "(under construction)"
DESCRIPTION = HELP


def add_arguments(parser):
    pass


def run(args):
    raise NotImplementedError("fmdepth demo is not built yet")
