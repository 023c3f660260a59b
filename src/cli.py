"""What every command-line entry point shares: bad input ends in one line on stderr and exit code 2."""
import sys


def run_cli(main, argv=None):
    """Call main(argv); a ValueError or FileNotFoundError is a user error, not a traceback."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except (ValueError, FileNotFoundError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
