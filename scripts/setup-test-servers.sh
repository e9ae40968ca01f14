#!/usr/bin/env bash
# Make the local test servers ready for the suite. Idempotent; run as root.
#
#  * PostgreSQL on 127.0.0.1:5432 (trust auth) and MariaDB on 127.0.0.1:3306 (root, empty
#    password): started if down, then waited for.
#  * Users for the "wrong password" and "no permission" tests:
#      PostgreSQL  esg_pw_user / esg-test-pw (scram-sha-256, via a pg_hba.conf line put
#                  before the trust lines), esg_noperm_user (no password, trust)
#      MariaDB     esg_pw_user@127.0.0.1 and @localhost / esg-test-pw, ALL on esg_test_%;
#                  esg_noperm_user@127.0.0.1, no password, no grants
#  * Checks that a wrong password for esg_pw_user is really refused by both servers.
#
# These are test-only accounts with a published password, on servers bound to 127.0.0.1.
set -euo pipefail

PG_HOST=127.0.0.1
MY_HOST=127.0.0.1
PW_USER=esg_pw_user
PW_PASSWORD=esg-test-pw
NOPERM_USER=esg_noperm_user
HBA_LINE="host all $PW_USER 127.0.0.1/32 scram-sha-256"
HBA_MARK="# esg-workbench tests: $PW_USER must give its password (scripts/setup-test-servers.sh)"

say() { printf 'setup-test-servers: %s\n' "$*"; }

# Clients must not pick up a developer's ~/.pgpass or ~/.my.cnf.
export PGPASSFILE=/nonexistent/esg-no-pgpass PGCONNECT_TIMEOUT=5
psql_admin() { psql -h "$PG_HOST" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
mysql_admin() { mysql --no-defaults -h"$MY_HOST" -uroot --connect-timeout=5; }

wait_for() {  # wait_for NAME COMMAND...: up to 60 s
    local name=$1; shift
    for _ in $(seq 120); do
        if "$@" >/dev/null 2>&1; then say "$name accepts connections"; return 0; fi
        sleep 0.5
    done
    say "ERROR: $name did not come up within 60 s" >&2
    return 1
}

# --- servers up -------------------------------------------------------------------

if pg_isready -q -h "$PG_HOST"; then
    say "PostgreSQL is running"
else
    say "starting PostgreSQL"
    # A failure here (say, "already running" while it is still starting) is judged by
    # the wait below, not by set -e.
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start \
        || say "pg_ctlcluster returned $?; waiting for PostgreSQL all the same"
fi
wait_for PostgreSQL pg_isready -h "$PG_HOST"

if mysqladmin --no-defaults -h"$MY_HOST" -uroot --connect-timeout=2 ping >/dev/null 2>&1; then
    say "MariaDB is running"
else
    say "starting MariaDB"
    # /run is emptied at boot; mariadbd needs its socket and pid directory.
    install -d -o mysql -g mysql /run/mysqld
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd \
        || say "start-stop-daemon returned $?; waiting for MariaDB all the same"
fi
wait_for MariaDB mysqladmin --no-defaults -h"$MY_HOST" -uroot --connect-timeout=2 ping

# --- PostgreSQL users -----------------------------------------------------------------

psql_admin <<SQL
DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PW_USER') THEN CREATE ROLE $PW_USER; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$NOPERM_USER') THEN CREATE ROLE $NOPERM_USER; END IF;
END \$\$;
SET password_encryption = 'scram-sha-256';
ALTER ROLE $PW_USER WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$PW_PASSWORD';
ALTER ROLE $NOPERM_USER WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD NULL;
SQL
say "PostgreSQL roles $PW_USER (password) and $NOPERM_USER (trust) are set"

# pg_hba.conf is read top down and the first matching line wins, so the password line
# must come before the trust lines. Rewrite the file only when our line is missing or in
# the wrong place (older copies are dropped, one is put before the first rule).
hba_file="$(psql_admin -c 'show hba_file')"
hba_new="$(mktemp)"
awk -v line="$HBA_LINE" -v mark="$HBA_MARK" '
    $0 == line || $0 == mark { next }
    !done && $0 !~ /^[[:space:]]*(#|$)/ { print mark; print line; done = 1 }
    { print }
    END { if (!done) { print mark; print line } }
' "$hba_file" >"$hba_new"
if cmp -s "$hba_new" "$hba_file"; then
    say "$hba_file already has the $PW_USER line"
else
    cat "$hba_new" >"$hba_file"  # in place: keeps the file's owner and mode
    say "added '$HBA_LINE' to $hba_file"
fi
rm -f "$hba_new"
psql_admin -c 'SELECT pg_reload_conf()' >/dev/null
hba_errors="$(psql_admin -c 'SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL')"
if [ -n "$hba_errors" ]; then
    say "ERROR: $hba_file has errors: $hba_errors" >&2
    exit 1
fi

# --- MariaDB users ----------------------------------------------------------------------

mysql_admin <<SQL
CREATE USER IF NOT EXISTS '$PW_USER'@'127.0.0.1';
CREATE USER IF NOT EXISTS '$PW_USER'@'localhost';
ALTER USER '$PW_USER'@'127.0.0.1' IDENTIFIED BY '$PW_PASSWORD';
ALTER USER '$PW_USER'@'localhost' IDENTIFIED BY '$PW_PASSWORD';
GRANT ALL ON \`esg\_test\_%\`.* TO '$PW_USER'@'127.0.0.1';
GRANT ALL ON \`esg\_test\_%\`.* TO '$PW_USER'@'localhost';
CREATE USER IF NOT EXISTS '$NOPERM_USER'@'127.0.0.1';
ALTER USER '$NOPERM_USER'@'127.0.0.1' IDENTIFIED BY '';
REVOKE ALL PRIVILEGES, GRANT OPTION FROM '$NOPERM_USER'@'127.0.0.1';
SQL
say "MariaDB users $PW_USER (password, ALL on esg_test_%) and $NOPERM_USER (no grants) are set"

# --- check that passwords are really asked for --------------------------------------------

failed=0
check() {  # check DESCRIPTION EXPECT(ok|refused) COMMAND...
    local what=$1 expect=$2 got output; shift 2
    if output="$("$@" 2>&1)"; then got=ok; else got=refused; fi
    # The server's own words tell a refused password from, say, a refused connection.
    [ "$got" = refused ] && got="refused ($(printf '%s' "$output" | grep -v '^$' | tail -n 1))"
    if [ "${got%% *}" = "$expect" ]; then
        say "check passed: $what -> $got"
    else
        say "CHECK FAILED: $what -> $got, expected $expect" >&2
        failed=1
    fi
}
pg_as() {  # pg_as USER PASSWORD
    PGPASSWORD=$2 psql -h "$PG_HOST" -U "$1" -d postgres -w -tAc 'SELECT 1'
}
my_as() {  # my_as USER PASSWORD
    MYSQL_PWD=$2 mysql --no-defaults -h"$MY_HOST" -u"$1" --connect-timeout=5 -e 'SELECT 1'
}
check "PostgreSQL $PW_USER with a wrong password" refused pg_as "$PW_USER" wrong-password
check "PostgreSQL $PW_USER with its password" ok pg_as "$PW_USER" "$PW_PASSWORD"
check "PostgreSQL $NOPERM_USER without a password" ok pg_as "$NOPERM_USER" ""
check "MariaDB $PW_USER with a wrong password" refused my_as "$PW_USER" wrong-password
check "MariaDB $PW_USER with its password" ok my_as "$PW_USER" "$PW_PASSWORD"
check "MariaDB $NOPERM_USER without a password" ok my_as "$NOPERM_USER" ""
exit "$failed"
