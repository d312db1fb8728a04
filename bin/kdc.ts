#!/usr/bin/env node
/** `kdc` executable: all parsing lives in src/cli. */
import { exitQuietlyWhenOutputCloses } from '../src/cli/common.js'
import { main } from '../src/cli/kdc.js'

exitQuietlyWhenOutputCloses()
process.exitCode = await main(process.argv.slice(2))
