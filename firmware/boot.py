# Runs before main.py on every boot. Nothing to do: the gateway configures
# its own hardware in main.py, and the USB REPL stays free for the console.
