import type { Route } from '../router.ts'
import { createMetricsRoutes } from './metrics.ts'
import { nodeRoutes } from './node.ts'
import { brainRoutes } from './brain.ts'
import { teamRoutes } from './team.ts'
import { splitRoutes } from './split.ts'
import { meshRunRoutes } from './mesh-run.ts'
import { openaiRoutes } from './openai.ts'
import { skillsRoutes } from './skills.ts'
import { planRoutes } from './plan.ts'
import { sessionRoutes } from './sessions.ts'
import { drainRoutes } from './drain.ts'

/**
 * Every control-API route. A module adds its routes by exporting a Route[] from
 * node/api/routes/<module>.ts and appending it here.
 */
export const allRoutes: Route[] = [
  ...nodeRoutes,
  ...brainRoutes,
  ...teamRoutes,
  ...splitRoutes,
  ...meshRunRoutes,
  ...openaiRoutes,
  ...skillsRoutes,
  ...planRoutes,
  ...sessionRoutes,
  ...drainRoutes,
  ...createMetricsRoutes()
]
