import { z } from 'zod'
import { PermagentError } from '../../../src/util/errors.ts'
import { parseBody } from '../body.ts'
import type { Route } from '../router.ts'

const tokenIds = z.array(z.number().int().min(0).max(2 ** 31)).max(1 << 20)
const sampling = z.object({
  temperature: z.number().min(0).max(100).optional(),
  topK: z.number().int().min(0).max(1 << 24).optional(),
  topP: z.number().gt(0).max(1).optional(),
  repetitionPenalty: z.number().gt(0).max(100).optional(),
  seed: z.number().int().min(0).max(2 ** 32 - 1).optional()
}).strict()
const maxTokens = z.number().int().min(1).max(1 << 20)
const quantization = z.enum(['none', 'f16', 'int8-block'])

const createBody = z.object({
  model: z.string().min(1).max(128),
  prompt: z.string().max(1 << 20).optional(),
  promptIds: tokenIds.optional(),
  maxTokens,
  sampling: sampling.optional(),
  stopTokens: z.array(z.number().int().min(0).max(2 ** 31)).max(1024).optional(),
  id: z.string().min(1).max(128).optional()
}).strict()

const generateBody = z.object({
  maxTokens,
  prompt: z.string().max(1 << 20).optional(),
  promptIds: tokenIds.optional(),
  sampling: sampling.optional()
}).strict()

const migrateBody = z.object({
  to: z.string().min(1).max(256),
  quantization: z.union([quantization, z.array(quantization).min(1).max(3)]).optional(),
  fidelityTokens: z.number().int().min(0).max(1024).optional(),
  force: z.boolean().optional(),
  auto: z.boolean().optional()
}).strict()

/**
 * Generation sessions hosted by the daemon (src/sessions): create, list, read, continue, migrate
 * to a connected peer, close.
 */
export const sessionRoutes: Route[] = [
  {
    method: 'POST',
    path: '/api/sessions',
    maxBodyBytes: 8 * 1024 * 1024,
    handler: async ({ node, body, signal }) => {
      const b = parseBody(createBody, body)
      if ((b.prompt === undefined) === (b.promptIds === undefined)) throw new PermagentError('ERR_INVALID_INPUT', 'give a prompt or promptIds (not both)')
      const step = await node.sessions.create({ ...b, signal })
      return { id: step.session.id, tokens: step.tokens, text: step.text, finishReason: step.finishReason, prefillMs: step.prefillMs, decodeMs: step.decodeMs, session: step.session }
    }
  },
  {
    method: 'GET',
    path: '/api/sessions',
    handler: async ({ node }) => ({ accepting: node.sessions.accepting, limits: node.sessions.limits, sessions: node.sessions.list() })
  },
  {
    method: 'GET',
    path: '/api/sessions/:id',
    handler: async ({ node, params }) => node.sessions.get(params.id)
  },
  {
    method: 'POST',
    path: '/api/sessions/:id/generate',
    maxBodyBytes: 8 * 1024 * 1024,
    handler: async ({ node, params, body, signal }) => {
      const b = parseBody(generateBody, body)
      if (b.prompt !== undefined && b.promptIds !== undefined) throw new PermagentError('ERR_INVALID_INPUT', 'give a prompt or promptIds (not both)')
      const step = await node.sessions.generate(params.id, { ...b, signal })
      return { id: step.session.id, tokens: step.tokens, text: step.text, finishReason: step.finishReason, prefillMs: step.prefillMs, decodeMs: step.decodeMs, session: step.session }
    }
  },
  {
    method: 'POST',
    path: '/api/sessions/:id/migrate',
    maxBodyBytes: 4096,
    handler: async ({ node, params, body, signal }) => {
      const b = parseBody(migrateBody, body)
      // the result is plain JSON: outcome, warm-start estimate, bytes, timings, fidelity record
      return await node.sessions.migrate(params.id, b.to, { quantization: b.quantization, fidelityTokens: b.fidelityTokens, force: b.force, auto: b.auto, signal })
    }
  },
  {
    method: 'DELETE',
    path: '/api/sessions/:id',
    handler: async ({ node, params }) => {
      node.sessions.close(params.id)
      return { closed: params.id }
    }
  }
]
