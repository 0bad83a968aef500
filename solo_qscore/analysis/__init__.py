"""Analysis tools of the two papers, each with a ``solo-qscore`` subcommand.

Every module here that defines ``register(subparsers)`` adds its subcommand to the command line
(``solo_qscore.cli`` discovers them); heavy imports stay inside the functions so that
``solo-qscore --help`` stays fast.
"""
