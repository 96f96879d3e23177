#!/bin/sh
# Install livetrader as a systemd service on Debian/Ubuntu, from a checkout: sudo systemd/install.sh
#
#   /opt/livetrader          a clean copy of the checkout (no .venv, dump, dump-demo, .git, caches)
#   /opt/livetrader/.venv    a fresh virtualenv with livetrader installed into it (not editable:
#                            nothing points back at the checkout, which may then be deleted)
#   /etc/livetrader/         livetrader.toml and livetrader.env (root:livetrader, 0640: the daemon
#                            reads them as User=livetrader), credentials.env (root:root, 0600:
#                            systemd reads EnvironmentFile= as root); existing files are kept
#   /etc/systemd/system/livetrader.service
#   the system user livetrader (its data directory, /var/lib/livetrader, is made by systemd)
#
# Running it again upgrades the code and the virtualenv and keeps /etc/livetrader and the data;
# then `systemctl restart livetrader`. Needs python3-venv (apt-get install python3-venv).
#
# DESTDIR=/some/dir installs under that directory instead, for tests: no user is created, no
# ownership changed, systemd not called; the virtualenv works only at that path.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd -P)
DESTDIR=${DESTDIR:-}
PYTHON=${PYTHON:-python3}
APP=/opt/livetrader
ETC=/etc/livetrader
UNIT=livetrader.service
USER_NAME=livetrader

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    fail "run it as root: sudo $0"
fi
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
    fail "$PYTHON cannot make a virtualenv: apt-get install python3-venv"
target=$DESTDIR$APP
mkdir -p "$target"
if [ "$(cd "$target" && pwd -P)" = "$SRC" ]; then
    fail "run it from a checkout other than $APP itself"
fi

# 1. The service user, without a login shell or home of its own.
if [ -z "$DESTDIR" ] && ! id "$USER_NAME" >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/livetrader --no-create-home --shell /usr/sbin/nologin "$USER_NAME"
fi

# 2. A clean copy of the code: the developer's virtualenv (its scripts and editable install point at
# the checkout), the data directories and caches stay behind. Readable by the service user.
rm -rf "$target"
mkdir -p "$target"
tar -C "$SRC" --exclude=./.venv --exclude=./dump --exclude=./dump-demo --exclude=./.git \
    --exclude=__pycache__ --exclude='*.egg-info' --exclude=./.pytest_cache --exclude=./.ruff_cache --exclude=./build -cf - . |
    tar -C "$target" -xf -
chmod -R u=rwX,go=rX "$target"

# 3. The virtualenv, with livetrader and its dependencies installed into it.
"$PYTHON" -m venv "$target/.venv"
"$target/.venv/bin/pip" install --quiet --disable-pip-version-check ${PIP_OPTIONS:-} "$target"
rm -rf "$target/build" "$target"/*.egg-info

# 4. The configuration, never overwritten.
etc=$DESTDIR$ETC
mkdir -p "$etc"
chmod 0755 "$etc"
if [ ! -e "$etc/livetrader.toml" ]; then
    cp "$SRC/config/livetrader.toml" "$etc/livetrader.toml"
    chmod 0640 "$etc/livetrader.toml"
    [ -n "$DESTDIR" ] || chown "root:$USER_NAME" "$etc/livetrader.toml"
fi
if [ ! -e "$etc/livetrader.env" ]; then
    echo "LIVETRADER_ARGS=BTCUSDT --strategy my-strategy --strategies-dir $APP/strategies" >"$etc/livetrader.env"
    chmod 0640 "$etc/livetrader.env"
    [ -n "$DESTDIR" ] || chown "root:$USER_NAME" "$etc/livetrader.env"
fi
if [ ! -e "$etc/credentials.env" ]; then
    : >"$etc/credentials.env"
    chmod 0600 "$etc/credentials.env"
fi

# 5. The unit.
mkdir -p "$DESTDIR/etc/systemd/system"
cp "$SRC/systemd/$UNIT" "$DESTDIR/etc/systemd/system/$UNIT"
chmod 0644 "$DESTDIR/etc/systemd/system/$UNIT"
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

echo "installed $APP/.venv/bin/livetrader; edit $ETC/livetrader.env, then: systemctl enable --now livetrader"
