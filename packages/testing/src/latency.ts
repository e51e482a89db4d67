/**
 * Named one-way latency profiles for simulated inter-region links. A profile maps a directed link
 * to a base delay plus jitter; the simulator samples `base + jitter * (u1 + u2)` (a triangular
 * distribution on [base, base + 2·jitter]), so messages on one link overtake each other.
 */
import { ConfigError } from '@concord/core'

/** Delay distribution of one directed link, in milliseconds. */
export interface LinkLatency {
  /** Minimum one-way delay. */
  readonly baseMs: number
  /** Spread: samples fall in [baseMs, baseMs + 2·jitterMs], mean baseMs + jitterMs. */
  readonly jitterMs: number
}

/** Assigns a latency distribution to every directed link between regions. */
export interface LatencyProfile {
  readonly name: string
  /** Latency of the link `from → to` (region names and their indexes in the simulation). */
  link(from: string, to: string, fromIndex: number, toIndex: number): LinkLatency
}

/** Names of the built-in profiles. */
export type LatencyProfileName = 'lan' | 'us-eu' | 'three-continents'

const LAN: LinkLatency = { baseMs: 0.5, jitterMs: 0.25 }

/**
 * Places a region on one of `sites`: by name prefix when the name starts with a site name
 * (`us-east` → `us`), otherwise round-robin by index.
 */
function site(sites: readonly string[], name: string, index: number): string {
  for (const s of sites) if (name === s || name.startsWith(`${s}-`)) return s
  return sites[index % sites.length] as string
}

function geo(name: string, sites: readonly string[], table: Readonly<Record<string, LinkLatency>>): LatencyProfile {
  return {
    name,
    link(from, to, fromIndex, toIndex) {
      const a = site(sites, from, fromIndex)
      const b = site(sites, to, toIndex)
      if (a === b) return LAN
      const l = table[`${a}-${b}`] ?? table[`${b}-${a}`]
      if (l === undefined) throw new ConfigError(`latency profile ${name}: no link ${a}-${b}`)
      return l
    },
  }
}

/** The built-in profiles: `lan` (~1 ms), `us-eu` (~40 ms one way), `three-continents` (us/eu/ap: ~40/~90/~110 ms). */
export const LATENCY_PROFILES: Readonly<Record<LatencyProfileName, LatencyProfile>> = {
  lan: { name: 'lan', link: () => LAN },
  'us-eu': geo('us-eu', ['us', 'eu'], { 'us-eu': { baseMs: 36, jitterMs: 4 } }),
  'three-continents': geo('three-continents', ['us', 'eu', 'ap'], {
    'us-eu': { baseMs: 36, jitterMs: 4 },
    'eu-ap': { baseMs: 82, jitterMs: 8 },
    'us-ap': { baseMs: 100, jitterMs: 10 },
  }),
}

/** Resolves a profile name (or passes a custom profile through). */
export function latencyProfile(p: LatencyProfileName | LatencyProfile): LatencyProfile {
  if (typeof p !== 'string') return p
  const found = LATENCY_PROFILES[p]
  if (found === undefined) throw new ConfigError(`unknown latency profile ${String(p)}`)
  return found
}
