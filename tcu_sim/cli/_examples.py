"""An example for every verb's `--help`: one table, added as the `Examples:` epilog of each command that has none
of its own (`car`, `fault` and `scenario` keep theirs). A test walks the command tree: every command shows one,
and every example names a real command path."""

from __future__ import annotations

import click

__all__ = ["EXAMPLES", "add_examples"]

V = "VSS..."  # a VIN: `tcu-sim app vehicles` lists yours, `up` prints the demo user's

#: Command path (without `tcu-sim`) → example lines (`tcu-sim ...`, optionally followed by a comment).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "": ("tcu-sim up                                   # the demo stack, with its live view",
         "tcu-sim app --help                           # be a user's phone app",
         'eval "$(_TCU_SIM_COMPLETE=bash_source tcu-sim)"   # tab completion (zsh_source, fish_source)'),
    "fleet": ("tcu-sim fleet validate fleet_configs/demo.yaml",),
    "fleet validate": ("tcu-sim fleet validate fleet_configs/city-1k.yaml --list",),
    "fleet schema": ("tcu-sim fleet schema -o fleet_configs/fleet.schema.json",),
    "fleet provision": ("tcu-sim fleet provision fleet_configs/demo.yaml --state .tcu-sim/demo",),
    "fleet run": ("tcu-sim fleet run fleet_configs/city-1k.yaml --broker mqtts://127.0.0.1:8883 --state "
                  ".tcu-sim/city-1k --shard 1/4",),
    "pki": ("tcu-sim pki init --state .tcu-sim/demo",),
    "pki init": ("tcu-sim pki init --state .tcu-sim/demo --host broker.example",),
    "pki issue-car": (f"tcu-sim pki issue-car {V} --state .tcu-sim/demo",),
    "pki issue": ("tcu-sim pki issue cloud-2 --state .tcu-sim/demo",),
    "pki revoke": (f"tcu-sim pki revoke {V} --state .tcu-sim/demo      # then reload the broker (SIGHUP)",),
    "pki crl": ("tcu-sim pki crl --state .tcu-sim/demo",),
    "broker": ("tcu-sim broker config --out broker-conf --state .tcu-sim/demo",),
    "broker config": ("tcu-sim broker config --out broker-conf --state .tcu-sim/demo",
                      "mosquitto -c broker-conf/mosquitto.conf"),
    "broker passwd": ("printf '%s\\n' \"$APP_PASSWORD\" | tcu-sim broker passwd app-1 --out broker-conf "
                      "--password-stdin",),
    "cloud": ("tcu-sim cloud run --broker mqtts://127.0.0.1:8883 --state .tcu-sim/demo",),
    "cloud run": ("tcu-sim cloud run --broker mqtts://127.0.0.1:8883 --state .tcu-sim/demo",
                  "tcu-sim cloud run --broker mqtts://127.0.0.1:8883 --db postgresql://127.0.0.1/tcusim "
                  "--client-id cloud-2"),
    "cloud audit": ("tcu-sim cloud audit --state .tcu-sim/demo --email demo@tcu-sim.test",),
    "cloud mailbox": ("tcu-sim cloud mailbox demo@tcu-sim.test --state .tcu-sim/demo",),
    "app": ("tcu-sim app login demo@tcu-sim.test", "tcu-sim app vehicles", f"tcu-sim app lock {V}"),
    "app register": ("tcu-sim app register you@example.test            # asks for a password and an S-PIN",),
    "app verify": ("tcu-sim app verify CODE                 # CODE: from `tcu-sim cloud mailbox EMAIL`",),
    "app login": ("tcu-sim app login demo@tcu-sim.test",
                  "printf '%s\\n' \"$PASSWORD\" | tcu-sim app login demo@tcu-sim.test   # piped: one line"),
    "app logout": ("tcu-sim app logout",),
    "app change-password": ("tcu-sim app change-password",),
    "app change-spin": ("tcu-sim app change-spin",),
    "app reauth-timeout": ("tcu-sim app reauth-timeout 15",),
    "app mailbox": ("tcu-sim app mailbox",),
    "app add-vehicle": (f"tcu-sim app add-vehicle {V} --accept-terms",),
    "app remove-vehicle": (f"tcu-sim app remove-vehicle {V}",),
    "app vehicles": ("tcu-sim app vehicles", "tcu-sim app vehicles --json"),
    "app status": (f"tcu-sim app status {V}", f"tcu-sim app status {V} --json"),
    "app invite": (f"tcu-sim app invite {V} partner@tcu-sim.test",),
    "app remove-secondary": (f"tcu-sim app remove-secondary {V} partner@tcu-sim.test",),
    "app lock": (f"tcu-sim app lock {V}                  # asks for the S-PIN, waits for the car",
                 f"tcu-sim app lock {V} --no-wait        # returns once the cloud took it"),
    "app unlock": (f"tcu-sim app unlock {V} --wait-timeout 30",),
    "app honk": (f"tcu-sim app honk {V} --flash-only",),
    "app refresh": (f"tcu-sim app refresh {V}",),
    "app heater": (f"tcu-sim app heater start {V} --duration 20 --temperature 22",),
    "app heater start": (f"tcu-sim app heater start {V} --duration 20 --temperature 22   # asks for the S-PIN",),
    "app heater stop": (f"tcu-sim app heater stop {V}",),
    "app ventilation": (f"tcu-sim app ventilation start {V} --duration 10",),
    "app ventilation start": (f"tcu-sim app ventilation start {V} --duration 10          # asks for the S-PIN",),
    "app ventilation stop": (f"tcu-sim app ventilation stop {V}",),
    "app command-status": ("tcu-sim app command-status cmd-...",),
    "app licence": (f"tcu-sim app licence status {V}",),
    "app licence status": (f"tcu-sim app licence status {V}",),
    "app licence renew": (f"tcu-sim app licence renew {V} --years 2",),
    "app licence cancel": (f"tcu-sim app licence cancel {V}",),
    "fault offline": (f"tcu-sim fault {V} offline --for 30s",),
    "fault online": (f"tcu-sim fault {V} online",),
    "fault flaky": (f"tcu-sim fault {V} flaky --drop-rate 0.3 --outage 20s",),
    "fault weak": ('tcu-sim fault "leon[0:3]" weak --signal 10',),
    "fault skew": (f"tcu-sim fault {V} skew 10m", f"tcu-sim fault {V} skew -- -90s"),
    "fault restart": (f"tcu-sim fault {V} restart",),
    "fault latency": ("tcu-sim fault --group city latency 300ms --jitter 50ms",),
    "fault bandwidth": ("tcu-sim fault --group city bandwidth 16 --for 1m",),
    "fault blackhole": ("tcu-sim fault --group city blackhole --for 1m",),
    "fault reset": (f"tcu-sim fault {V} reset",),
    "fault slice": (f"tcu-sim fault {V} slice --for 1m",),
    "fault limit": (f"tcu-sim fault {V} limit 4096",),
    "fault clear": (f"tcu-sim fault {V} clear",),
    "fault broker": ("tcu-sim fault broker restart --state .tcu-sim/demo",),
    "scenario validate": ("tcu-sim scenario validate fleet_configs/scenarios/*.yaml",),
    "scenario run": ("tcu-sim scenario run fleet_configs/scenarios/tunnel-commute.yaml --junit out.xml",
                     "tcu-sim scenario run fleet_configs/scenarios/tunnel-commute.yaml --quiet   # the verdict only",
                     "tcu-sim scenario run fleet_configs/scenarios/tunnel-commute.yaml -v        # and the log"),
    "up": ("tcu-sim up                                    # fleet_configs/demo.yaml",
           "tcu-sim up fleet_configs/city-1k.yaml --no-view --duration 60",
           "tcu-sim up --embedded --port 0 --http 0"),
    "asyncapi": ("tcu-sim asyncapi -o docs/asyncapi.yaml",),
    "record": ("tcu-sim record start run.jsonl.gz --state .tcu-sim/demo",),
    "record start": ("tcu-sim record start run.jsonl.gz --state .tcu-sim/demo --duration 60",),
    "record show": ("tcu-sim record show run.jsonl.gz",),
    "replay": ("tcu-sim replay run.jsonl.gz --junit replay.xml",),
}


def walk(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command below (and including) `command`, with its path of names."""
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            found += walk(sub, (*path, name))
    return found


def add_examples(root: click.Group) -> None:
    """Give every command without examples in its epilog the ones of `EXAMPLES`."""
    for path, command in walk(root):
        lines = EXAMPLES.get(" ".join(path))
        if lines is None or (command.epilog and "Examples:" in command.epilog):
            continue
        block = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
        command.epilog = f"{command.epilog}\n\n{block}" if command.epilog else block
