/** Whether a proto/ script module is the one node was started with (for the generators). */
import { realpathSync } from 'node:fs'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

/** True when `moduleUrl` (import.meta.url) is the entry script of this process. */
export function isMain(moduleUrl: string): boolean {
  const argv1 = process.argv[1]
  if (!argv1) return false
  try {
    return realpathSync(resolve(argv1)) === realpathSync(fileURLToPath(moduleUrl))
  } catch {
    return false
  }
}
