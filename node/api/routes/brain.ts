import { isAbsolute } from 'node:path'
import { z } from 'zod'
import { VISIBILITIES, type AsOf, type EntityRef } from '../../../src/brain/index.ts'
import { InvalidInputError } from '../../../src/util/errors.ts'
import { parseBody } from '../body.ts'
import type { Route } from '../router.ts'

// Shapes only: the brain checks sizes, dates, types and predicates itself, with typed errors.
const text = z.string().max(1024)
const time = z.union([z.string().max(64), z.number().int()])
const asOfFields = {
  /** A time on the `axis` (default recorded: what the brain knew then; valid: what was true then). */
  asOf: time.optional(),
  axis: z.enum(['recorded', 'valid']).optional(),
  /** Both axes at once. */
  validAt: time.optional()
}

function asOfFrom (body: { asOf?: string | number, axis?: 'recorded' | 'valid', validAt?: string | number }): AsOf | undefined {
  const asOf: AsOf = {}
  if (body.asOf !== undefined) {
    if (body.axis === 'valid') asOf.valid = body.asOf
    else asOf.recorded = body.asOf
  }
  if (body.validAt !== undefined) {
    if (asOf.valid !== undefined) throw new InvalidInputError('give validAt or asOf with axis valid, not both')
    asOf.valid = body.validAt
  }
  return Object.keys(asOf).length === 0 ? undefined : asOf
}

const rememberBody = z.object({
  content: z.string(),
  key: text.nullish(),
  kind: text.optional(),
  topic: text.nullish(),
  tags: z.array(text).max(256).optional(),
  visibility: z.enum(VISIBILITIES).optional(),
  confidence: z.number().optional(),
  validFrom: time.nullish(),
  validTo: time.nullish(),
  team: z.string().regex(/^[0-9a-f]{64}$/, 'a team id is 64 hex characters').optional()
}).strict()

const recallBody = z.object({
  query: z.string().max(64 * 1024),
  limit: z.number().int().optional(),
  kind: text.optional(),
  topic: text.optional(),
  visibility: z.enum(VISIBILITIES).optional(),
  author: text.optional(),
  verifySignatures: z.boolean().optional(),
  expand: z.boolean().optional(),
  team: z.string().regex(/^[0-9a-f]{64}$/, 'a team id is 64 hex characters').optional(),
  ...asOfFields
}).strict()

const entityRef = z.union([text, z.object({ name: text, type: text.optional() }).strict()])

const relateBody = z.object({
  subject: entityRef,
  predicate: text,
  object: entityRef,
  subjectType: text.optional(),
  objectType: text.optional(),
  confidence: z.number().optional(),
  validFrom: time.nullish(),
  validTo: time.nullish(),
  sourceMemory: text.nullish()
}).strict()

const pathBody = z.object({ from: entityRef, to: entityRef, maxHops: z.number().int().optional(), limit: z.number().int().optional(), ...asOfFields }).strict()
const neighborsBody = z.object({ entity: entityRef, hops: z.number().int().optional(), limit: z.number().int().optional(), ...asOfFields }).strict()
const forgetBody = z.object({ target: text, reason: text.nullish() }).strict()
const aliasBody = z.object({ entity: entityRef, alias: text }).strict()
const verifyBody = z.object({ signatures: z.boolean().optional() }).strict()
const fileBody = z.object({ file: z.string().min(1).max(4096) }).strict()

function ref (value: string | { name: string, type?: string }, type: string | undefined): string | EntityRef {
  if (typeof value === 'string') return type === undefined ? value : { name: value, type }
  return type === undefined ? value : { ...value, type }
}

function absoluteFile (file: string): string {
  if (!isAbsolute(file)) throw new InvalidInputError('file must be an absolute path (the daemon does not share the caller\'s working directory)')
  return file
}

/** The brain: remember, recall, relate, path, neighbors, forget, history, alias, stats, verify, export, import. */
export const brainRoutes: Route[] = [
  {
    method: 'POST',
    path: '/api/brain/remember',
    maxBodyBytes: 1024 * 1024,
    handler: async ({ node, body }) => {
      const { team, ...input } = parseBody(rememberBody, body)
      // through the bridge: visibility team or wider shares it with the team (the only one, or --team)
      return await node.shared.remember(input, team)
    }
  },
  {
    method: 'POST',
    path: '/api/brain/recall',
    maxBodyBytes: 128 * 1024,
    handler: async ({ node, body }) => {
      const { query, asOf, axis, validAt, team, ...options } = parseBody(recallBody, body)
      if (team !== undefined) return node.shared.recall(query, team, { limit: options.limit })
      return node.brain.recall(query, { ...options, asOf: asOfFrom({ asOf, axis, validAt }) })
    }
  },
  {
    method: 'POST',
    path: '/api/brain/relate',
    maxBodyBytes: 16 * 1024,
    handler: async ({ node, body }) => {
      const b = parseBody(relateBody, body)
      return node.brain.relate({
        subject: ref(b.subject, b.subjectType),
        predicate: b.predicate,
        object: ref(b.object, b.objectType),
        confidence: b.confidence,
        validFrom: b.validFrom,
        validTo: b.validTo,
        sourceMemory: b.sourceMemory
      })
    }
  },
  {
    method: 'POST',
    path: '/api/brain/alias',
    maxBodyBytes: 16 * 1024,
    handler: async ({ node, body }) => {
      const b = parseBody(aliasBody, body)
      return { entity: node.brain.addAlias(b.entity, b.alias) }
    }
  },
  {
    method: 'POST',
    path: '/api/brain/path',
    maxBodyBytes: 16 * 1024,
    handler: async ({ node, body }) => {
      const { from, to, asOf, axis, validAt, ...options } = parseBody(pathBody, body)
      return node.brain.path(from, to, { ...options, asOf: asOfFrom({ asOf, axis, validAt }) })
    }
  },
  {
    method: 'POST',
    path: '/api/brain/neighbors',
    maxBodyBytes: 16 * 1024,
    handler: async ({ node, body }) => {
      const { entity, asOf, axis, validAt, ...options } = parseBody(neighborsBody, body)
      return node.brain.neighbors(entity, { ...options, asOf: asOfFrom({ asOf, axis, validAt }) })
    }
  },
  {
    method: 'POST',
    path: '/api/brain/forget',
    maxBodyBytes: 16 * 1024,
    handler: async ({ node, body }) => {
      const { target, reason } = parseBody(forgetBody, body)
      // retractions of shared records go to the teams that hold them
      return { retractions: await node.shared.forget(target, reason) }
    }
  },
  {
    method: 'GET',
    path: '/api/brain/history/:target',
    handler: async ({ node, params }) => ({ versions: node.brain.history(params.target) })
  },
  {
    method: 'GET',
    path: '/api/brain/stats',
    handler: async ({ node }) => node.brain.stats()
  },
  {
    method: 'POST',
    path: '/api/brain/verify',
    maxBodyBytes: 4096,
    handler: async ({ node, body }) => node.brain.verify(parseBody(verifyBody, body))
  },
  {
    method: 'POST',
    path: '/api/brain/export',
    maxBodyBytes: 8192,
    handler: async ({ node, body }) => {
      const file = absoluteFile(parseBody(fileBody, body).file)
      return { file, ...node.brain.exportFile(file) }
    }
  },
  {
    method: 'POST',
    path: '/api/brain/import',
    maxBodyBytes: 8192,
    handler: async ({ node, body }) => {
      const file = absoluteFile(parseBody(fileBody, body).file)
      const logger = node.logger.child({ module: 'brain', file })
      const summary = await node.brain.importFile(file, {
        onBatch: ({ committed, lines }) => { logger.info({ committed, lines }, 'brain import: batch committed') }
      })
      logger.info(summary, 'brain import: done')
      return summary
    }
  }
]
