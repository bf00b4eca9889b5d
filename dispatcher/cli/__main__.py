"""`python -m dispatcher.cli`: the same as the `outage-dispatcher` console script."""

from dispatcher.cli.commands import main

main()
