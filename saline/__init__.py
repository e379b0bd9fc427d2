"""saline: a Salt-shaped remote-execution system whose returners deliver every result durably."""

__version__ = "0.1.0"
