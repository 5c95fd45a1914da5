/** What the bench reads from /proc beyond harness/proc.ts: a server's CPU time, and its fds settling back. */
import { spawnSync } from "bun";
import { readFileSync } from "node:fs";
import { openFds } from "../harness/proc.ts";

const CLOCK_TICKS_PER_S = Number(spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

/** CPU time process `pid` has used so far (user + system, every thread), in ms. */
export function cpuMs(pid: number): number {
  // Fields after the command name (which may hold spaces, inside parentheses): utime is the 12th, stime the 13th.
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1_000) / CLOCK_TICKS_PER_S;
}

/** Open fds of `pid`, or NaN once it is gone. */
export function fdCount(pid: number): number {
  try {
    return openFds(pid);
  } catch {
    return Number.NaN;
  }
}

/** Polls until the server's fds are within 5 of `baseline` or `timeoutMs` passes; returns the last count. */
export async function fdsSettle(pid: number, baseline: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let fds = fdCount(pid);
  while (!(fds <= baseline + 5) && Date.now() < deadline) {
    await Bun.sleep(100);
    fds = fdCount(pid);
  }
  return fds;
}

/**
 * CPU time the whole machine (every core, every process) has spent running so far, in ms: user,
 * nice, system, irq and softirq; not idle, iowait, or steal (time the hypervisor gave elsewhere).
 */
export function machineBusyMs(): number {
  // /proc/stat's first line: cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user).
  const [user, nice, system, , , irq, softirq] = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(
    Number,
  );
  return ((user! + nice! + system! + irq! + softirq!) * 1_000) / CLOCK_TICKS_PER_S;
}

/** The 1-minute load average, now. */
export function loadAverage(): number {
  return Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
}
