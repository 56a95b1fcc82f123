"""tcu-sim: a fleet of simulated connected cars and the cloud they talk to over MQTT."""

from tcu_sim.clock import Clock, SkewedClock, SystemClock, VirtualClock

__all__ = ["Clock", "SkewedClock", "SystemClock", "VirtualClock", "__version__"]

__version__ = "0.1.0"
