"""``python -m hub.cli`` and the ``hub`` console script."""

import sys

from infra.signals import exit_on_sigterm


def main() -> None:
    if sys.argv[1:2] == ["run"]:
        # A service told to stop while it still loads its modules (seconds on a busy machine) stops with 0,
        # as it does later; a one-shot command keeps Python's default (killed: it did not finish).
        exit_on_sigterm()
    from hub.cli.main import app

    app()


if __name__ == "__main__":
    main()
