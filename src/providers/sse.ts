import { PROVIDER_ERRORS, RemoteProviderError } from './errors.ts'

/**
 * Incremental server-sent events parser (the WHATWG event-stream rules the OpenAI API follows):
 * lines end in LF, CRLF or CR; `data:` lines of one event are joined with LF; a blank line ends
 * the event; comments (`:`) and other fields are ignored. An event larger than `maxEventBytes`
 * is refused instead of buffered.
 */
export class SseParser {
  private readonly maxEventBytes: number
  private readonly decoder = new TextDecoder()
  private buffer = ''
  private data: string[] = []
  private dataBytes = 0

  constructor (maxEventBytes: number) {
    this.maxEventBytes = maxEventBytes
  }

  /** Feeds bytes; returns the data of every event completed by them, in order. */
  push (bytes: Uint8Array): string[] {
    this.buffer += this.decoder.decode(bytes, { stream: true })
    return this.lines(false)
  }

  /** The stream ended: a last line ended by a lone CR still counts (an unterminated event does not). */
  finish (): string[] {
    this.buffer += this.decoder.decode()
    return this.lines(true)
  }

  private lines (ended: boolean): string[] {
    const events: string[] = []
    for (;;) {
      const match = /\r\n|\n|\r/.exec(this.buffer)
      // a lone CR at the end may be the first half of CRLF: wait for the next chunk
      if (match === null || (!ended && match[0] === '\r' && match.index === this.buffer.length - 1)) break
      const line = this.buffer.slice(0, match.index)
      this.buffer = this.buffer.slice(match.index + match[0].length)
      if (line === '') {
        if (this.data.length > 0) events.push(this.data.join('\n'))
        this.data = []
        this.dataBytes = 0
        continue
      }
      if (line.startsWith(':')) continue
      const colon = line.indexOf(':')
      const field = colon === -1 ? line : line.slice(0, colon)
      if (field !== 'data') continue
      let value = colon === -1 ? '' : line.slice(colon + 1)
      if (value.startsWith(' ')) value = value.slice(1)
      this.dataBytes += value.length + 1
      this.tooLarge(this.dataBytes)
      this.data.push(value)
    }
    this.tooLarge(this.buffer.length + this.dataBytes)
    return events
  }

  private tooLarge (size: number): void {
    if (size > this.maxEventBytes) throw new RemoteProviderError(PROVIDER_ERRORS.remoteTooLarge, `a streamed event from the remote API exceeds ${this.maxEventBytes} bytes`)
  }
}
