"""`fmdepth export-gt` (under construction in this session; replaced by its owner)."""
HELP = "(under construction)"
DESCRIPTION = HELP


def add_arguments(parser):
    pass


def run(args):
    raise NotImplementedError("fmdepth export-gt is not built yet")
