#!/usr/bin/env node
/** `kadmin` executable: all parsing lives in src/cli. */
import { main } from '../src/cli/kadmin.js'

process.exitCode = await main(process.argv.slice(2))
