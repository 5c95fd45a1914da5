import { readdirSync, readFileSync } from "node:fs";

/** Resident memory of process `pid` in bytes (Linux). */
export function rss(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"));
  return Number(/(\d+)/.exec(line ?? "")?.[1]) * 1_024;
}

/** Open file descriptors of process `pid` (Linux). */
export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}
