"""netcoach: practise networking the way coaches teach it (sow, don't sell)."""

__version__ = "0.1.0"
