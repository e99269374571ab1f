import type { Command } from 'commander'
import type { CliContext } from '../cli-context.ts'
import { register as registerNodeCommands } from './node.ts'
import { register as registerModelCommands } from './model.ts'
import { register as registerBrainCommands } from './brain.ts'
import { register as registerTeamCommands } from './team.ts'
import { register as registerSplitCommands } from './split.ts'
import { register as registerSkillCommands } from './skills.ts'
import { register as registerPlanCommands } from './plan.ts'
import { register as registerSessionCommands } from './session.ts'
import { register as registerDrainCommands } from './drain.ts'

/**
 * Every command module. A module adds its commands by exporting `register(program, cli)` from
 * node/commands/<module>.ts and appending it here.
 */
export const commandModules: Array<(program: Command, cli: CliContext) => void> = [
  registerNodeCommands,
  registerModelCommands,
  registerBrainCommands,
  registerTeamCommands,
  registerSplitCommands,
  registerSkillCommands,
  registerPlanCommands,
  registerSessionCommands,
  registerDrainCommands
]
