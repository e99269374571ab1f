import { Tokenizer } from '@huggingface/tokenizers'
import { Template } from '@huggingface/jinja'
import { InvalidInputError } from '../util/index.ts'
import { ModelConfigError } from './errors.ts'

export const MAX_TOKENIZER_BYTES = 64 * 1024 * 1024

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant'
  content: string
}

/** A tokenizer.json tokenizer plus the model's chat template, if it has one. */
export class TextTokenizer {
  private readonly tokenizer: Tokenizer
  private readonly template: Template | null
  private readonly config: Record<string, unknown>
  /** The vocabulary's unknown-token id: the JS tokenizer leaves out-of-vocabulary words of a WordLevel model as undefined. */
  private readonly unknownId: number | undefined

  constructor (tokenizerJson: string, tokenizerConfig: Record<string, unknown> = {}, chatTemplate: string | null = null) {
    if (tokenizerJson.length > MAX_TOKENIZER_BYTES) throw new ModelConfigError('tokenizer.json is too large')
    let json: unknown
    try {
      json = JSON.parse(tokenizerJson)
    } catch (err) {
      throw new ModelConfigError('tokenizer.json is not valid JSON', { cause: err })
    }
    try {
      this.tokenizer = new Tokenizer(json as object, tokenizerConfig)
    } catch (err) {
      throw new ModelConfigError(`tokenizer.json cannot be loaded: ${(err as Error).message}`, { cause: err })
    }
    try {
      this.template = chatTemplate === null ? null : new Template(chatTemplate)
    } catch (err) {
      throw new ModelConfigError(`the chat template does not parse: ${(err as Error).message}`, { cause: err })
    }
    this.config = tokenizerConfig
    const unknown = (json as { model?: { unk_token?: unknown } }).model?.unk_token
    this.unknownId = typeof unknown === 'string' ? this.tokenizer.token_to_id(unknown) : undefined
  }

  get hasChatTemplate (): boolean {
    return this.template !== null
  }

  encode (text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    const ids: Array<number | undefined> = this.tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids
    if (!ids.some((id) => typeof id !== 'number')) return ids as number[]
    if (this.unknownId === undefined) throw new InvalidInputError('the text holds words this tokenizer\'s vocabulary lacks, and it has no unknown token')
    return ids.map((id) => (typeof id === 'number' ? id : this.unknownId as number))
  }

  decode (ids: number[], options: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return ''
    return this.tokenizer.decode(ids, { skip_special_tokens: options.skipSpecialTokens ?? true })
  }

  tokenId (token: string): number | undefined {
    return this.tokenizer.token_to_id(token)
  }

  /** Renders messages with the chat template (generation prompt appended); plain join without one. */
  renderChat (messages: ChatMessage[]): string {
    if (this.template === null) return messages.map((m) => `${m.role}: ${m.content}`).join('\n') + '\nassistant:'
    const special = (key: string): string => {
      const value = this.config[key]
      if (typeof value === 'string') return value
      if (value !== null && typeof value === 'object' && 'content' in value && typeof value.content === 'string') return value.content
      return ''
    }
    try {
      return this.template.render({
        messages,
        add_generation_prompt: true,
        bos_token: special('bos_token'),
        eos_token: special('eos_token')
      })
    } catch (err) {
      // Templates refuse conversations they cannot render (raise_exception): the input's fault.
      throw new InvalidInputError(`the chat template refused the conversation: ${(err as Error).message}`, { cause: err })
    }
  }
}

/** The chat template from tokenizer_config.json (string or named list) or a chat_template.jinja file. */
export function extractChatTemplate (tokenizerConfig: Record<string, unknown>, jinjaFile: string | null): string | null {
  if (jinjaFile !== null) return jinjaFile
  const value = tokenizerConfig.chat_template
  if (typeof value === 'string') return value
  if (Array.isArray(value)) {
    const named = value.find((t) => t !== null && typeof t === 'object' && t.name === 'default') ?? value[0]
    if (named !== undefined && typeof named.template === 'string') return named.template
  }
  return null
}
