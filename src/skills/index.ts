export { SkillError } from './errors.ts'
export { parseSemver, compareSemver, isSemver, type SemVer } from './semver.ts'
export { parseSkillMd, renderFrontMatter, SKILL_FILE, INPUT_TYPES, MAX_SKILL_MD_BYTES, type SkillFrontMatter, type SkillInput, type InputType } from './front-matter.ts'
export {
  packSkill, decodeBundle, checkManifest, checkBundlePath, encodeManifest, assembleBundle, bundleIdOf, bundleSizeOf, sha256Hex, resolveLimits,
  SKILL_LIMITS, MAX_BUNDLE_BYTES, MAX_MANIFEST_BYTES, MANIFEST_FORMAT, BUNDLE_MAGIC, INSTALL_RECORD_FILE,
  type SkillBundle, type SkillManifest, type ManifestFile, type SkillLimits
} from './bundle.ts'
export { parseAnnouncement, encodePublish, encodeYank, type SkillAnnouncement, type PublishAnnouncement, type YankAnnouncement } from './announce.ts'
