import type { z } from 'zod'
import { InvalidInputError } from '../../src/util/errors.ts'
import { describeZodIssues } from '../config.ts'

/** Validates a request body against a schema, with an error naming each bad field. */
export function parseBody<T> (schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body ?? {})
  if (!parsed.success) throw new InvalidInputError(describeZodIssues(parsed.error, 'request body'))
  return parsed.data
}
