import tempfile
import time

from livetrader import Live

Live.configure(speed=3000, data_dir=tempfile.mkdtemp(prefix="livetrader-"), log_level="WARNING")

stop = Live.background("BTCUSDT", strategy="my-strategy")  # returns at once; runs in a thread
while Live.get_data("BTCUSDT", "my-strategy").total_closed < 2:  # a few simulated hours
    time.sleep(0.5)
stats = Live.get_data("BTCUSDT", "my-strategy")  # statistics of the closed trades so far
print("closed trades:", stats.total_closed, "total PnL %:", stats.total_pnl)
report = Live.get_report("BTCUSDT", "my-strategy")  # the markdown report, as text
print(report.splitlines()[0])
print("report written to", Live.dump("BTCUSDT", "my-strategy"))
stop()  # lets the current tick finish, accepts no new signal, cancels a waiting scheduled one
