# Stand-in for a Python worker run by PM2: idles until stopped.
import signal, sys, time
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
while True:
    time.sleep(3600)
