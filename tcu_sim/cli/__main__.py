"""`python -m tcu_sim.cli` runs the `tcu-sim` command."""

from tcu_sim.cli import main

main()
