import { PermagentError } from '../util/errors.ts'

/**
 * A skill operation was refused. `code` says why, for the CLI, the API and tests:
 *
 * | code | meaning |
 * | --- | --- |
 * | ERR_SKILL_FRONT_MATTER | SKILL.md is missing, or its front matter is malformed or incomplete |
 * | ERR_SKILL_VERSION | the version is not semver 2.0.0 (without build metadata) |
 * | ERR_SKILL_PATH | a path escapes the bundle (`..`, absolute), is a symlink or special file, or is not portable |
 * | ERR_SKILL_TOO_LARGE | a file, the whole bundle or the manifest is over its limit |
 * | ERR_SKILL_BUNDLE | the bundle bytes or the manifest are malformed |
 * | ERR_SKILL_TAMPERED | a file's bytes do not match the hash in the manifest, or the bundle does not match its id |
 * | ERR_SKILL_BAD_SIGNATURE | the manifest signature does not verify |
 * | ERR_SKILL_NOT_FOUND, ERR_SKILL_AMBIGUOUS | no such skill; several authors publish the name |
 * | ERR_SKILL_YANKED | the version was withdrawn by its author (install with allowYanked to force) |
 * | ERR_SKILL_EQUIVOCATION | the author published two different bundles under one name@version |
 * | ERR_SKILL_NOT_MEMBER | the author was not a member of the team when publishing |
 * | ERR_SKILL_UNTRUSTED | the author does not pass the local trust policy |
 * | ERR_SKILL_FETCH_FAILED | no peer served a bundle that verifies |
 * | ERR_SKILL_NOT_AUTHOR | only the author may yank a version |
 * | ERR_SKILL_NOT_INSTALLED, ERR_SKILL_CONFLICT | nothing installed under the name; installed from another author |
 */
export class SkillError extends PermagentError {}
