#!/usr/bin/env node
/** `kdc` executable: all parsing lives in src/cli. */
import { main } from '../src/cli/kdc.js'

process.exitCode = await main(process.argv.slice(2))
