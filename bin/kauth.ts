#!/usr/bin/env node
/** `kauth` executable: all parsing lives in src/cli. */
import { main } from '../src/cli/kauth.js'

process.exitCode = await main(process.argv.slice(2))
