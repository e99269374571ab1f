import { InvalidDateError } from './errors.ts'

/** Far beyond any real date; stands for "open" / "now and forever" in SQL comparisons. */
export const END_OF_TIME = 8_640_000_000_000_000

const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:?\d{2})?)?$/

/** Accepted everywhere a time is given: ISO 8601 text, a Date, or epoch milliseconds. */
export type TimeInput = string | number | Date

/**
 * Parses a time strictly: ISO 8601 dates and date-times (no locale formats, no "next tuesday"),
 * Dates and integer epoch milliseconds. Anything else is an InvalidDateError.
 */
export function parseTime (value: TimeInput, what = 'time'): number {
  let ms: number
  if (value instanceof Date) {
    ms = value.getTime()
  } else if (typeof value === 'number') {
    ms = Number.isInteger(value) ? value : Number.NaN
  } else if (typeof value === 'string') {
    const text = value.trim()
    const match = ISO_DATE.exec(text)
    if (match == null) throw new InvalidDateError(what, value)
    const [, year, month, day, hour] = match
    const monthNumber = Number(month)
    const dayNumber = Number(day)
    if (monthNumber < 1 || monthNumber > 12 || dayNumber < 1 || dayNumber > 31) throw new InvalidDateError(what, value)
    // a date without a zone is UTC, so the same text means the same instant on every machine
    const normalised = hour === undefined ? `${year}-${month}-${day}T00:00:00Z` : (match[8] === undefined ? text.replace(' ', 'T') + 'Z' : text.replace(' ', 'T'))
    ms = Date.parse(normalised)
    // Date.parse rolls 2024-02-31 over to March: refuse dates that do not exist
    if (Number.isFinite(ms) && hour === undefined && new Date(ms).getUTCDate() !== dayNumber) throw new InvalidDateError(what, value)
  } else {
    throw new InvalidDateError(what, value)
  }
  if (!Number.isFinite(ms) || Math.abs(ms) >= END_OF_TIME) throw new InvalidDateError(what, value)
  return ms
}

export function parseOptionalTime (value: TimeInput | null | undefined, what: string): number | undefined {
  return value == null ? undefined : parseTime(value, what)
}

export function isoTime (ms: number): string
export function isoTime (ms: number | null): string | null
export function isoTime (ms: number | null): string | null {
  return ms == null ? null : new Date(ms).toISOString()
}
