from .loop import train, run_name
