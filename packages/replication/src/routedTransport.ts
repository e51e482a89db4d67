/**
 * RoutedTransport: one Transport over several, chosen by origin — each region's log where that
 * region keeps it. The Redis topology runs one Redis per region: a node appends to its own
 * region's Redis and reads every other region's stream from that region's Redis, so it needs one
 * RedisTransport per origin behind the single transport a RegionNode takes.
 */
import { ClosedError, ConfigError, checkKnownOptions, type AppendOptions, type LogPosition, type LogRecord, type PollOptions, type Transport } from '@concord/core'
import { isTransport } from './options.js'

/** Options for {@link RoutedTransport}. */
export interface RoutedTransportOptions {
  /** The transport holding each origin's log, by origin (region) name. */
  readonly routes: Readonly<Record<string, Transport>> | ReadonlyMap<string, Transport>
  /** The transport of every origin without a route. @default none: such an origin is a ConfigError */
  readonly fallback?: Transport
}

/**
 * Routes every call by its origin to the transport holding that origin's log. Each origin's
 * guarantees are its transport's. All transports must be of one kind (one `name`): positions are
 * ordered by {@link Transport.comparePositions}, which names no origin. `close()` closes every
 * transport once (they belong to the router from then on).
 */
export class RoutedTransport implements Transport {
  readonly name: string
  /** The smallest `maxRecordBytes` of the routes, if any has one: a record any region's log takes. */
  readonly maxRecordBytes?: number
  private readonly routes: ReadonlyMap<string, Transport>
  private readonly fallback: Transport | undefined
  private readonly all: readonly Transport[]
  /** Set by close(): every later call throws ClosedError, a second close() does nothing. */
  private closing: Promise<void> | undefined

  /** @throws ConfigError without any transport, or with transports of different kinds. */
  constructor(options: RoutedTransportOptions) {
    // An array passed as routes (`[t]`) was taken as the route of origin "0".
    if (typeof options !== 'object' || options === null || typeof options.routes !== 'object' || options.routes === null || Array.isArray(options.routes)) {
      throw new ConfigError('routed transport: routes must be an object or a Map of origin → transport')
    }
    checkKnownOptions('routed transport', options, ['routes', 'fallback'])
    const routes = new Map<string, Transport>(options.routes instanceof Map ? options.routes : Object.entries(options.routes))
    for (const [origin, t] of routes) {
      // A Map key that is not a string (a number) could never match an origin: calls failed later, as "no route".
      if (typeof origin !== 'string') throw new ConfigError(`routed transport: an origin name must be a string, got ${typeof origin} ${String(origin)}`)
      if (origin.length === 0) throw new ConfigError('routed transport: an origin name must not be empty')
      if (!isTransport(t)) throw new ConfigError(`routed transport: the route of ${origin} is not a Transport`)
    }
    if (options.fallback !== undefined && !isTransport(options.fallback)) throw new ConfigError('routed transport: fallback is not a Transport')
    this.routes = routes
    this.fallback = options.fallback
    this.all = [...new Set([...routes.values(), ...(options.fallback === undefined ? [] : [options.fallback])])]
    const first = this.all[0]
    if (first === undefined) throw new ConfigError('routed transport: give at least one route or a fallback')
    const kinds = new Set(this.all.map((t) => t.name))
    if (kinds.size > 1) throw new ConfigError(`routed transport: every route must be one kind of transport (positions of different kinds do not compare), got ${[...kinds].join(', ')}`)
    this.name = `routed(${first.name})`
    const limits = this.all.map((t) => t.maxRecordBytes).filter((n): n is number => typeof n === 'number')
    if (limits.length > 0) this.maxRecordBytes = Math.min(...limits)
  }

  /** The transport holding `origin`'s log. @throws ConfigError for an origin without a route and no fallback. */
  route(origin: string): Transport {
    this.check()
    const t = this.routes.get(origin) ?? this.fallback
    if (t === undefined) throw new ConfigError(`routed transport: no route for origin ${JSON.stringify(origin)} (routes: ${[...this.routes.keys()].join(', ')})`)
    return t
  }

  append(origin: string, records: readonly Uint8Array[], options?: AppendOptions): Promise<readonly LogPosition[]> {
    return this.call(origin, (t) => t.append(origin, records, options))
  }

  poll(reader: string, origin: string, options?: PollOptions): Promise<readonly LogRecord[]> {
    return this.call(origin, (t) => t.poll(reader, origin, options))
  }

  private check(): void {
    if (this.closing !== undefined) throw new ClosedError(`${this.name} transport is closed`)
  }

  /** Announces each transport's share of `origins` to it (those without `subscribe` need none). */
  async subscribe(reader: string, origins: readonly string[]): Promise<void> {
    this.check()
    const byTransport = new Map<Transport, string[]>()
    for (const origin of origins) {
      const t = this.route(origin)
      const list = byTransport.get(t)
      if (list === undefined) byTransport.set(t, [origin])
      else list.push(origin)
    }
    await Promise.all([...byTransport].map(([t, list]) => t.subscribe?.(reader, list)))
  }

  /** Watches every routed transport that can be watched (records on the others come without a call). */
  watch(reader: string, listener: () => void): () => void {
    this.check()
    const stops: Array<() => void> = []
    try {
      for (const t of this.all) if (t.watch !== undefined) stops.push(t.watch(reader, listener))
    } catch (e) {
      // One route refused (closed): the watches already started are stopped, not left running.
      for (const stop of stops) stop()
      throw e
    }
    return () => {
      for (const stop of stops) stop()
    }
  }

  commit(reader: string, origin: string, position: LogPosition): Promise<void> {
    return this.call(origin, (t) => t.commit(reader, origin, position))
  }

  committed(reader: string, origin: string): Promise<LogPosition | undefined> {
    return this.call(origin, (t) => t.committed(reader, origin))
  }

  rewind(reader: string, origin: string): Promise<void> {
    return this.call(origin, (t) => t.rewind(reader, origin))
  }

  earliest(origin: string): Promise<LogPosition | undefined> {
    return this.call(origin, (t) => t.earliest(origin))
  }

  latest(origin: string): Promise<LogPosition | undefined> {
    return this.call(origin, async (t) => (t.latest === undefined ? undefined : t.latest(origin)))
  }

  trim(origin: string, before: LogPosition): Promise<void> {
    return this.call(origin, (t) => t.trim(origin, before))
  }

  comparePositions(a: LogPosition, b: LogPosition): number {
    return (this.all[0] as Transport).comparePositions(a, b)
  }

  /** Closes every transport once, all of them even when one fails; rejects with the first failure. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      // Each close in an async function of its own: one that throws instead of rejecting left
      // every route after it open (review finding).
      const results = await Promise.allSettled(this.all.map(async (t) => t.close()))
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
      if (failed !== undefined) throw failed.reason
    })()
    return this.closing
  }

  /** Runs `fn` on `origin`'s transport; an unknown origin rejects (like every other failure of a call). */
  private async call<T>(origin: string, fn: (t: Transport) => Promise<T>): Promise<T> {
    return fn(this.route(origin))
  }
}

