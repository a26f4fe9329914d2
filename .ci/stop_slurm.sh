#!/usr/bin/env bash
# Stop the daemons started by .ci/start_slurm.sh, by their PID files (never by name).
for f in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid /run/slurm/slurmdbd.pid; do
  [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null
done
sleep 2
for f in /run/mysqld/mysqld.pid /run/munge/munged.pid; do
  [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null
done
sleep 2
exit 0
