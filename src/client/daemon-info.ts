import { readFile } from 'node:fs/promises'
import { z } from 'zod'

/** <data-dir>/daemon.json: how CLI commands find a running daemon. */
export const daemonInfoSchema = z.object({
  pid: z.number().int().positive(),
  apiUrl: z.string().url(),
  peerId: z.string(),
  addresses: z.array(z.string()),
  startedAt: z.string(),
  version: z.string()
})

export type DaemonInfo = z.infer<typeof daemonInfoSchema>

export async function readDaemonInfo (file: string): Promise<DaemonInfo | undefined> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  try {
    const parsed = daemonInfoSchema.safeParse(JSON.parse(text))
    return parsed.success ? parsed.data : undefined
  } catch {
    return undefined
  }
}
