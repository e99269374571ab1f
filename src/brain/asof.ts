/**
 * As-of filters on the two time axes, as SQL over a table alias with the brain's bitemporal
 * columns (recorded_at, superseded_at, retracted_at, valid_from, valid_to, valid_end).
 * - @rt, recorded axis: what this brain held at that time (END_OF_TIME = now).
 * - @vt, valid axis: what was true in the world at that time, by what the brain held at @rt.
 *   Without @vt only the versions current at @rt count.
 */
import { END_OF_TIME, parseTime } from './time.ts'
import type { AsOf } from './types.ts'

export function timeFilter (alias: string): string {
  const a = alias
  return `${a}.recorded_at <= @rt AND (${a}.retracted_at IS NULL OR ${a}.retracted_at > @rt)
    AND (CASE WHEN @vt IS NULL THEN (${a}.superseded_at IS NULL OR ${a}.superseded_at > @rt)
      ELSE ${a}.valid_from <= @vt AND COALESCE(CASE WHEN ${a}.superseded_at <= @rt THEN ${a}.valid_end ELSE ${a}.valid_to END, ${END_OF_TIME}) > @vt END)`
}

export interface TimeParams {
  rt: number
  vt: number | null
}

export function timeParams (asOf: AsOf | undefined): TimeParams {
  if (asOf == null) return { rt: END_OF_TIME, vt: null }
  return {
    rt: asOf.recorded == null ? END_OF_TIME : parseTime(asOf.recorded, 'as-of (recorded)'),
    vt: asOf.valid == null ? null : parseTime(asOf.valid, 'as-of (valid)')
  }
}

/** Whether a row passes the time filter; the same rule as timeFilter, for rows already in memory. */
export function passesTime (row: { recorded_at: number, retracted_at: number | null, superseded_at: number | null, valid_from: number, valid_to: number | null, valid_end: number | null }, p: TimeParams): boolean {
  if (row.recorded_at > p.rt) return false
  if (row.retracted_at !== null && row.retracted_at <= p.rt) return false
  if (p.vt === null) return row.superseded_at === null || row.superseded_at > p.rt
  if (row.valid_from > p.vt) return false
  const end = row.superseded_at !== null && row.superseded_at <= p.rt ? row.valid_end : row.valid_to
  return (end ?? END_OF_TIME) > p.vt
}
