"""The bounded contexts. Each owns its tables and talks to the others only by messages."""
