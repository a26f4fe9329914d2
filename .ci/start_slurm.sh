#!/usr/bin/env bash
# Start a single-node SLURM "cluster" on localhost, for the SLURM launcher tests (tests/test_slurm.py).
# Debian/Ubuntu with slurm-wlm (22.05 checked), as root (or with passwordless sudo), no systemd needed.
#
#   .ci/start_slurm.sh            install the packages when missing (apt), then start the daemons
#   INSTALL=0 .ci/start_slurm.sh  only start (the packages must be there)
#   WITH_DBD=0 ...                no MariaDB/slurmdbd: submitit then cannot notice a job that dies hard
#   .ci/stop_slurm.sh             stop the daemons again (by their PID files)
#
# Exits 0 when the node is idle (also when it already was), non-zero with a message otherwise, so CI
# can go on without SLURM (the tests then skip and say why).
set -euo pipefail
WITH_DBD=${WITH_DBD:-1}
INSTALL=${INSTALL:-1}
PART=${SLURM_PARTITION_NAME:-debug}

if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    exec sudo -n env WITH_DBD="$WITH_DBD" INSTALL="$INSTALL" SLURM_PARTITION_NAME="$PART" bash "$0" "$@"
  fi
  echo "start_slurm: needs root (or passwordless sudo) to install and start the SLURM daemons" >&2
  exit 2
fi

NODE=$(hostname -s)
if command -v sinfo >/dev/null && [ "$(timeout 3 sinfo -h -n "$NODE" -o %T 2>/dev/null)" = idle ]; then
  echo "start_slurm: already running"; sinfo; exit 0
fi

PACKAGES="slurm-wlm munge"
[ "$WITH_DBD" = 1 ] && PACKAGES="$PACKAGES slurmdbd mariadb-server"
if ! command -v slurmctld >/dev/null || { [ "$WITH_DBD" = 1 ] && ! command -v slurmdbd >/dev/null; }; then
  if [ "$INSTALL" != 1 ] || ! command -v apt-get >/dev/null; then
    echo "start_slurm: SLURM is not installed (apt-get install -y $PACKAGES)" >&2
    exit 3
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq $PACKAGES >/dev/null
fi

# ---- node resources from slurmd -C (RealMemory lowered to 90% so the node never drains for "low memory")
read -r CPUS SOCKETS CORES THREADS MEM < <(slurmd -C | head -1 | awk '{for(i=1;i<=NF;i++){split($i,a,"=");v[a[1]]=a[2]} print v["CPUs"],v["SocketsPerBoard"],v["CoresPerSocket"],v["ThreadsPerCore"],v["RealMemory"]}')
MEM=$(( MEM * 9 / 10 ))

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm /run/munge
chown munge:munge /run/munge

if [ "$WITH_DBD" = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819"
else
  ACCT="AccountingStorageType=accounting_storage/none"
fi

cat > /etc/slurm/slurm.conf <<CONF
ClusterName=localcluster
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
${ACCT}
JobCompType=jobcomp/none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SwitchType=switch/none
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} Boards=1 SocketsPerBoard=${SOCKETS} CoresPerSocket=${CORES} ThreadsPerCore=${THREADS} RealMemory=${MEM} State=UNKNOWN
PartitionName=${PART} Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
CONF

# ---- munge (the Debian package creates /etc/munge/munge.key; create one if missing)
[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  su -s /bin/sh munge -c /usr/sbin/munged          # daemonizes, pid in /run/munge/munged.pid
fi
munge -n | unmunge >/dev/null

if [ "$WITH_DBD" = 1 ]; then
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if ! mysqladmin ping >/dev/null 2>&1; then
    setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mysqld.pid \
        >/var/log/slurm/mariadbd.log 2>&1 < /dev/null &
    for i in $(seq 60); do mysqladmin ping >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  # Fresh controller state (job ids restart at 1) => drop old accounting rows, else sacct returns stale
  # records for re-used job ids (submitit would read e.g. an old FAILED state).
  if [ -z "$(ls -A /var/spool/slurmctld)" ]; then mysql -e "DROP DATABASE IF EXISTS slurm_acct_db;"; fi
  mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmpw
CONF
  chmod 600 /etc/slurm/slurmdbd.conf            # slurmdbd refuses a world-readable conf
  /usr/sbin/slurmdbd                             # daemonizes
  for i in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
fi

/usr/sbin/slurmctld        # daemonizes; registers the cluster in slurmdbd by itself
/usr/sbin/slurmd           # daemonizes
for i in $(seq 60); do [ "$(timeout 3 sinfo -h -n "$NODE" -o %T 2>/dev/null)" = idle ] && break; sleep 0.5; done
if [ "$(timeout 3 sinfo -h -n "$NODE" -o %T 2>/dev/null)" != idle ]; then
  echo "start_slurm: the node did not become idle; see /var/log/slurm/*.log" >&2
  exit 4
fi
sinfo
