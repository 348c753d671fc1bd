#!/usr/bin/env bash
# Install the Debian packages the system and fault tests use, once per machine, before pytest runs.
#
#   tests/provision-host.sh           install what is missing (root; `make test` runs it first)
#   tests/provision-host.sh --check   only say what is missing (exit 1 if anything is)
#
# The tests run real daemons: Docker (images built offline from a debootstrapped base), PostgreSQL
# and Redis (tests/system/celery, tests/faults/test_service_faults.py), `docker-compose config`, and
# Debian's Chromium, which Playwright drives to open the run report in the Airflow UI (tests/integration/ui;
# Playwright's own browser downloads are never used).
# Their fixtures only check that these commands exist and fail naming this script when they don't;
# they start (and stop) the daemons themselves, on free loopback ports, so nothing installed here is
# left running: services the packages would start are held back while installing.
#
# Idempotent: a command that is already there (from Debian or elsewhere, e.g. Docker's own
# packages) is left alone, and nothing at all is done when every one is present.
set -euo pipefail

# What the tests run, and the Debian package that provides it. tests/support/host.py reads this
# table too, so a fixture's error names the package. A path may hold a glob (Debian keeps
# PostgreSQL's server binaries off PATH, under a versioned folder). Columns: command, package, used by.
: <<'TABLE'
dockerd                                  docker.io       tests/system/docker: the Docker daemon the tests start
docker                                   docker.io       tests/system/docker: builds, runs and inspects containers
debootstrap                              debootstrap     containers/base/build-base-image.sh: the offline base image
/usr/lib/python3.*/ensurepip/__init__.py python3-venv    containers/fill-wheelhouse.sh: a venv of Debian's python3
docker-compose                           docker-compose  tests/system/docker/test_compose_config.py
/usr/lib/postgresql/*/bin/postgres       postgresql      tests/system/celery, tests/faults/test_service_faults.py
/usr/lib/postgresql/*/bin/initdb         postgresql      the same: a throwaway cluster per test module
redis-server                             redis-server    tests/system/celery: the Celery broker
chromium                                 chromium        tests/integration/ui: the browser Playwright drives (headless)
TABLE

check_only=false
case "${1:-}" in
    "") ;;
    --check) check_only=true ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

table() { sed -n "/^: <<'TABLE'\$/,/^TABLE\$/p" "$0" | sed '1d;$d'; }

found() {
    local command="$1"
    if [[ "$command" == /* ]]; then
        compgen -G "$command" >/dev/null
    else
        command -v "$command" >/dev/null
    fi
}

missing_packages() {
    local command package used_by
    while read -r command package used_by; do
        if found "$command"; then
            echo "  present: $command" >&3
        else
            echo "  missing: $command (Debian package $package; $used_by)" >&3
            echo "$package"
        fi
    done < <(table) | sort -u
}

exec 3>&1  # the report, in order with the rest; stdout of missing_packages is its list
echo "checking the commands the system and fault tests run:"
mapfile -t missing < <(missing_packages)
if ((${#missing[@]} == 0)); then
    echo "every command is present: nothing to install"
    exit 0
fi
if $check_only; then
    echo "missing Debian packages: ${missing[*]}; install them with: sudo $0" >&2
    exit 1
fi
if [[ "$(id -u)" != 0 ]]; then
    echo "installing ${missing[*]} needs root: sudo $0" >&2
    exit 1
fi

# Packages with daemons (postgresql, redis-server, docker.io) start them on install where they can;
# the tests start their own, so hold them back (invoke-rc.d's policy: 101, action not allowed).
policy=/usr/sbin/policy-rc.d
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
echo "+ apt-get update"
apt-get update -q
echo "+ apt-get install --no-install-recommends ${missing[*]}"
apt-get install -y -q --no-install-recommends "${missing[@]}"

echo "checking again:"
mapfile -t still < <(missing_packages)
if ((${#still[@]} > 0)); then
    echo "still missing after the install: ${still[*]}" >&2
    exit 1
fi
echo "installed ${missing[*]}: every command is present"
