"""`fmdepth correspond` (under construction in this session; replaced by its owner)."""
HELP = "(under construction)"
DESCRIPTION = HELP


def add_arguments(parser):
    pass


def run(args):
    raise NotImplementedError("fmdepth correspond is not built yet")
