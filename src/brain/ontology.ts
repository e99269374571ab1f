import { readFileSync } from 'node:fs'
import { z } from 'zod'
import { InvalidInputError } from '../util/index.ts'
import { OntologyViolationError, UnknownPredicateError, UnknownTypeError } from './errors.ts'

/**
 * The ontology: entity types (optionally with a parent type) and predicates with a domain (the
 * subject's types), a range (the object's types) and whether they are single-valued (a subject
 * has at most one current object: a new value supersedes the previous one). "*" means any type.
 * A JSON file of this shape can replace the built-in one (createBrain({ ontology })).
 */
const NAME = z.string().regex(/^[a-z][a-z0-9_]{0,63}$/, 'names are lowercase snake_case, at most 64 characters')
const TYPE_LIST = z.union([z.literal('*'), NAME, z.array(z.union([NAME, z.literal('*')])).min(1)])

export const ontologySchema = z.object({
  types: z.array(z.union([NAME, z.object({ name: NAME, parent: NAME.optional(), description: z.string().max(500).optional() })])).min(1).max(1000),
  predicates: z.array(z.object({
    name: NAME,
    domain: TYPE_LIST.default('*'),
    range: TYPE_LIST.default('*'),
    single: z.boolean().default(false),
    description: z.string().max(500).optional()
  })).min(1).max(1000)
})

export type OntologyDefinition = z.input<typeof ontologySchema>

export interface PredicateRule {
  name: string
  domain: string[] | '*'
  range: string[] | '*'
  single: boolean
}

export interface Ontology {
  readonly types: readonly string[]
  readonly predicates: readonly string[]
  /** Throws UnknownTypeError listing the allowed types. */
  checkType: (type: string) => void
  /** Throws UnknownPredicateError listing the allowed predicates. */
  predicate: (name: string) => PredicateRule
  /** Throws OntologyViolationError when the subject/object types do not fit the predicate. */
  checkRelation: (subjectType: string, predicate: PredicateRule, objectType: string) => void
  /** The single type a predicate's domain (side 'domain') or range admits, if exactly one. */
  impliedType: (predicate: PredicateRule, side: 'domain' | 'range') => string | undefined
}

export const DEFAULT_ONTOLOGY: OntologyDefinition = {
  types: [
    'person', 'organization', { name: 'team', parent: 'organization' }, 'project', 'place', 'tool',
    'technology', 'concept', 'event', 'document', 'topic', 'task', 'product', 'agent'
  ],
  predicates: [
    { name: 'works_at', domain: ['person', 'agent'], range: 'organization', single: true },
    { name: 'lives_in', domain: 'person', range: 'place', single: true },
    { name: 'located_in', domain: '*', range: 'place', single: true },
    { name: 'member_of', domain: ['person', 'agent'], range: ['organization', 'project'] },
    { name: 'reports_to', domain: 'person', range: 'person', single: true },
    { name: 'manages', domain: 'person', range: ['person', 'project', 'organization'] },
    { name: 'knows', domain: 'person', range: 'person' },
    { name: 'works_on', domain: ['person', 'agent', 'organization'], range: ['project', 'task', 'product'] },
    { name: 'owns', domain: '*', range: '*' },
    { name: 'uses', domain: '*', range: ['tool', 'technology', 'product'] },
    { name: 'depends_on', domain: ['project', 'tool', 'technology', 'product', 'task'], range: ['project', 'tool', 'technology', 'product', 'task'] },
    { name: 'part_of', domain: '*', range: '*' },
    { name: 'created', domain: ['person', 'organization', 'agent'], range: '*' },
    { name: 'prefers', domain: ['person', 'agent'], range: '*' },
    { name: 'about', domain: ['document', 'event', 'task'], range: '*' },
    { name: 'attended', domain: 'person', range: 'event' },
    { name: 'status', domain: ['project', 'task', 'product'], range: 'concept', single: true },
    { name: 'related_to', domain: '*', range: '*' }
  ]
}

export function buildOntology (definition: unknown): Ontology {
  const parsed = ontologySchema.safeParse(definition)
  if (!parsed.success) throw new InvalidInputError(`invalid ontology: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
  const parents = new Map<string, string | undefined>()
  for (const entry of parsed.data.types) {
    if (typeof entry === 'string') parents.set(entry, undefined)
    else parents.set(entry.name, entry.parent)
  }
  for (const [name, parent] of parents) {
    if (parent !== undefined && !parents.has(parent)) throw new InvalidInputError(`invalid ontology: type ${name} has unknown parent ${parent}`)
  }
  const types = [...parents.keys()]
  const predicates = new Map<string, PredicateRule>()
  const normaliseList = (list: string | string[], where: string): string[] | '*' => {
    const items = typeof list === 'string' ? [list] : list
    if (items.includes('*')) return '*'
    for (const type of items) if (!parents.has(type)) throw new InvalidInputError(`invalid ontology: ${where} names unknown type ${type}`)
    return items
  }
  for (const p of parsed.data.predicates) {
    predicates.set(p.name, { name: p.name, domain: normaliseList(p.domain, `predicate ${p.name} domain`), range: normaliseList(p.range, `predicate ${p.name} range`), single: p.single })
  }
  const predicateNames = [...predicates.keys()]

  const isA = (type: string, allowed: string[] | '*'): boolean => {
    if (allowed === '*') return true
    const seen = new Set<string>()
    for (let t: string | undefined = type; t !== undefined && !seen.has(t); t = parents.get(t)) {
      if (allowed.includes(t)) return true
      seen.add(t)
    }
    return false
  }

  return {
    types,
    predicates: predicateNames,
    checkType (type) {
      if (!parents.has(type)) throw new UnknownTypeError(type, types)
    },
    predicate (name) {
      const rule = predicates.get(name)
      if (rule === undefined) throw new UnknownPredicateError(name, predicateNames)
      return rule
    },
    checkRelation (subjectType, rule, objectType) {
      if (!isA(subjectType, rule.domain)) throw new OntologyViolationError(`${rule.name} needs a subject of type ${(rule.domain as string[]).join(' or ')}, not ${subjectType}`)
      if (!isA(objectType, rule.range)) throw new OntologyViolationError(`${rule.name} needs an object of type ${(rule.range as string[]).join(' or ')}, not ${objectType}`)
    },
    impliedType (rule, side) {
      const list = side === 'domain' ? rule.domain : rule.range
      return list !== '*' && list.length === 1 ? list[0] : undefined
    }
  }
}

/** Reads an ontology JSON file. */
export function loadOntologyFile (file: string): Ontology {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new InvalidInputError(`cannot read ontology file ${file}: ${(err as Error).message}`, { cause: err })
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new InvalidInputError(`ontology file ${file} is not JSON: ${(err as Error).message}`, { cause: err })
  }
  return buildOntology(json)
}
