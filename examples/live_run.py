import asyncio
import contextlib
import tempfile

from livetrader import Live

# A simulated clock 3000 times faster than real time, a fresh data directory (the default,
# ./dump, would resume whatever an earlier run left there) and only warnings on stdout.
Live.configure(speed=3000, data_dir=tempfile.mkdtemp(prefix="livetrader-"), log_level="WARNING")


async def main():
    async with contextlib.aclosing(Live.run("BTCUSDT", strategy="my-strategy", exchange="sim")) as results:
        async for result in results:  # opened / closed / cancelled, as they happen
            print(result.action, result.signal_id, result.pnl_percentage)
            if result.action == "closed":
                break  # leaving the loop stops the pair cleanly


asyncio.run(main())
