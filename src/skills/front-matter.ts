import { SkillError } from './errors.ts'
import { parseSemver } from './semver.ts'

/**
 * SKILL.md front matter: a strict subset of YAML, parsed without a YAML library (docs/skills.md).
 *
 * ```
 * ---
 * name: deploy-preview
 * version: 1.2.0
 * description: Build a branch and deploy a preview environment
 * runner: bash
 * entry: run.sh
 * inputs:
 *   - name: branch
 *     type: string
 *     required: true
 *     description: the git branch to deploy
 * ---
 * (markdown body)
 * ```
 *
 * Lines are `key: value` at the top level, or the `inputs:` list: items start with `  - key: value`
 * and continue with `    key: value`. A value is plain text (no leading quote or YAML indicator,
 * no ` #`) or a double-quoted JSON string. Blank lines and whole-line `#` comments are allowed;
 * tabs, unknown keys and repeated keys are not.
 */

export const INPUT_TYPES = ['string', 'number', 'integer', 'boolean', 'path', 'json'] as const
export type InputType = typeof INPUT_TYPES[number]

export interface SkillInput {
  name: string
  type: InputType
  required: boolean
  description?: string
}

export interface SkillFrontMatter {
  name: string
  version: string
  description: string
  runner: string
  entry: string
  inputs: SkillInput[]
}

export const SKILL_FILE = 'SKILL.md'
export const MAX_SKILL_MD_BYTES = 64 * 1024
export const MAX_INPUTS = 32
export const MAX_DESCRIPTION = 1024
export const MAX_INPUT_DESCRIPTION = 512

const NAME = /^[a-z0-9][a-z0-9-]{0,63}$/
const RUNNER = /^[a-z0-9][a-z0-9._-]{0,31}$/
const INPUT_NAME = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/
const KEY = /^[a-z_]+$/
const TOP_KEYS = new Set(['name', 'version', 'description', 'runner', 'entry', 'inputs'])
const INPUT_KEYS = new Set(['name', 'type', 'required', 'description'])
// plain scalars may not start with a YAML indicator or a quote (they would mean something else)
const PLAIN_FORBIDDEN_START = /^[-?:,[\]{}#&*!|>'"%@`]/

function fail (line: number, message: string): never {
  throw new SkillError('ERR_SKILL_FRONT_MATTER', `${SKILL_FILE} line ${line}: ${message}`)
}

function parseValue (raw: string, line: number): string {
  if (raw.length === 0) fail(line, 'a value is missing after ":"')
  if (raw.startsWith('"')) {
    let value: unknown
    try {
      value = JSON.parse(raw)
    } catch {
      fail(line, 'a quoted value must be one double-quoted string with JSON escapes, and nothing after it')
    }
    if (typeof value !== 'string') fail(line, 'a quoted value must be a string')
    return value
  }
  if (PLAIN_FORBIDDEN_START.test(raw)) fail(line, `a plain value may not start with "${raw[0]}"; put it in double quotes`)
  if (raw !== raw.trim()) fail(line, 'a plain value may not end with spaces')
  if (raw.includes(' #')) fail(line, 'a plain value may not contain " #" (a YAML comment); put it in double quotes')
  return raw
}

function splitPair (text: string, line: number): [string, string] {
  const colon = text.indexOf(':')
  if (colon <= 0) fail(line, `expected "key: value", got "${text.slice(0, 80)}"`)
  const key = text.slice(0, colon)
  if (!KEY.test(key)) fail(line, `"${key.slice(0, 40)}" is not a key (lowercase letters and _)`)
  const rest = text.slice(colon + 1)
  if (rest.length === 0) return [key, '']
  if (!rest.startsWith(' ')) fail(line, `expected a space after "${key}:"`)
  return [key, rest.slice(1)]
}

function checkText (value: string, what: string, max: number, line: number): string {
  if (value.length === 0 || value.length > max) fail(line, `${what} is 1 to ${max} characters`)
  if (/[\u0000-\u001f\u007f]/.test(value)) fail(line, `${what} may not hold control characters`)
  return value
}

/** Splits SKILL.md into front matter lines and body; the file must start with `---`. */
function frontMatterLines (text: string): string[] {
  const lines = text.split(/\r?\n/)
  if (lines[0] !== '---') throw new SkillError('ERR_SKILL_FRONT_MATTER', `${SKILL_FILE} must start with a front matter block: a first line "---", then "key: value" lines, then "---"`)
  const end = lines.indexOf('---', 1)
  if (end < 0) throw new SkillError('ERR_SKILL_FRONT_MATTER', `${SKILL_FILE}: the front matter is not closed by a "---" line`)
  return lines.slice(1, end)
}

/** Parses and checks SKILL.md's front matter; throws ERR_SKILL_FRONT_MATTER or ERR_SKILL_VERSION. */
export function parseSkillMd (bytes: Uint8Array): SkillFrontMatter {
  if (bytes.byteLength > MAX_SKILL_MD_BYTES) throw new SkillError('ERR_SKILL_TOO_LARGE', `${SKILL_FILE} is ${bytes.byteLength} bytes; the limit is ${MAX_SKILL_MD_BYTES}`)
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes)
  } catch {
    throw new SkillError('ERR_SKILL_FRONT_MATTER', `${SKILL_FILE} is not valid UTF-8`)
  }
  const lines = frontMatterLines(text)
  const top = new Map<string, { value: string, line: number }>()
  const inputs: Array<{ fields: Map<string, string>, line: number }> = []
  let inInputs = false

  lines.forEach((content, index) => {
    const line = index + 2
    if (content.includes('\t')) fail(line, 'tabs are not allowed; indent with spaces')
    if (content.trim() === '' || /^\s*#/.test(content)) return
    if (inInputs && content.startsWith('  - ')) {
      const [key, raw] = splitPair(content.slice(4), line)
      inputs.push({ fields: new Map([[key, parseValue(raw, line)]]), line })
      return
    }
    if (inInputs && content.startsWith('    ') && !content.startsWith('     ')) {
      const item = inputs[inputs.length - 1]
      if (item == null) fail(line, 'an input field before the first "  - " item')
      const [key, raw] = splitPair(content.slice(4), line)
      if (item.fields.has(key)) fail(line, `input field "${key}" is repeated`)
      item.fields.set(key, parseValue(raw, line))
      return
    }
    if (content.startsWith(' ')) fail(line, inInputs ? 'an input item is "  - key: value", its further fields "    key: value"' : 'unexpected indentation')
    inInputs = false
    const [key, raw] = splitPair(content, line)
    if (!TOP_KEYS.has(key)) fail(line, `unknown key "${key}" (known: ${[...TOP_KEYS].join(', ')})`)
    if (top.has(key)) fail(line, `"${key}" is repeated`)
    if (key === 'inputs') {
      if (raw === '[]') { top.set(key, { value: '[]', line }); return }
      if (raw !== '') fail(line, '"inputs:" is followed by its items on the next lines, or is "inputs: []"')
      top.set(key, { value: '', line })
      inInputs = true
      return
    }
    top.set(key, { value: parseValue(raw, line), line })
  })

  const required = (key: string): { value: string, line: number } => {
    const entry = top.get(key)
    if (entry == null) throw new SkillError('ERR_SKILL_FRONT_MATTER', `${SKILL_FILE}: the front matter has no "${key}" (required: name, version, description, runner, entry)`)
    return entry
  }
  const name = required('name')
  if (!NAME.test(name.value)) fail(name.line, `name "${name.value.slice(0, 80)}" must be 1 to 64 characters of a-z, 0-9 and -, starting with a letter or digit`)
  const version = required('version')
  parseSemver(version.value)
  const description = required('description')
  checkText(description.value, 'description', MAX_DESCRIPTION, description.line)
  const runner = required('runner')
  if (!RUNNER.test(runner.value)) fail(runner.line, `runner "${runner.value.slice(0, 40)}" must be 1 to 32 characters of a-z, 0-9, ., _ and - (e.g. bash, node, python, agent)`)
  const entry = required('entry')
  checkText(entry.value, 'entry', 255, entry.line)

  if (inputs.length > MAX_INPUTS) fail(inputs[MAX_INPUTS].line, `at most ${MAX_INPUTS} inputs`)
  const seen = new Set<string>()
  const parsedInputs = inputs.map(({ fields, line }): SkillInput => {
    for (const key of fields.keys()) if (!INPUT_KEYS.has(key)) fail(line, `unknown input field "${key}" (known: ${[...INPUT_KEYS].join(', ')})`)
    const inputName = fields.get('name')
    if (inputName == null || !INPUT_NAME.test(inputName)) fail(line, 'an input has a name of 1 to 64 characters of letters, digits, _ and -, starting with a letter or _')
    if (seen.has(inputName)) fail(line, `input "${inputName}" is declared twice`)
    seen.add(inputName)
    const type = fields.get('type')
    if (type == null || !(INPUT_TYPES as readonly string[]).includes(type)) fail(line, `input "${inputName}" has a type: one of ${INPUT_TYPES.join(', ')}`)
    const requiredFlag = fields.get('required')
    if (requiredFlag != null && requiredFlag !== 'true' && requiredFlag !== 'false') fail(line, `input "${inputName}": required is true or false`)
    const inputDescription = fields.get('description')
    if (inputDescription != null) checkText(inputDescription, `input "${inputName}" description`, MAX_INPUT_DESCRIPTION, line)
    return { name: inputName, type: type as InputType, required: requiredFlag === 'true', ...(inputDescription != null ? { description: inputDescription } : {}) }
  })
  if (top.get('inputs')?.value === '' && parsedInputs.length === 0) fail(top.get('inputs')?.line ?? 1, '"inputs:" has no items; write "inputs: []" for none')

  return { name: name.value, version: version.value, description: description.value, runner: runner.value, entry: entry.value, inputs: parsedInputs }
}

function renderValue (value: string): string {
  const plain = value.length > 0 && !PLAIN_FORBIDDEN_START.test(value) && value === value.trim() && !value.includes(' #') && !/[\u0000-\u001f\u007f]/.test(value) && !/^(true|false|null|~|[\d.+-].*)$/i.test(value)
  return plain ? value : JSON.stringify(value)
}

/** Writes front matter that parseSkillMd reads back to the same fields (used for drafts). */
export function renderFrontMatter (fields: SkillFrontMatter): string {
  const lines = ['---', `name: ${fields.name}`, `version: ${fields.version}`, `description: ${renderValue(fields.description)}`, `runner: ${fields.runner}`, `entry: ${renderValue(fields.entry)}`]
  if (fields.inputs.length === 0) {
    lines.push('inputs: []')
  } else {
    lines.push('inputs:')
    for (const input of fields.inputs) {
      lines.push(`  - name: ${input.name}`, `    type: ${input.type}`, `    required: ${input.required ? 'true' : 'false'}`)
      if (input.description != null) lines.push(`    description: ${renderValue(input.description)}`)
    }
  }
  lines.push('---')
  return lines.join('\n') + '\n'
}
