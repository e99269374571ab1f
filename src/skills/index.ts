export { SkillError } from './errors.ts'
export { parseSemver, compareSemver, isSemver, type SemVer } from './semver.ts'
export { parseSkillMd, renderFrontMatter, SKILL_FILE, INPUT_TYPES, MAX_SKILL_MD_BYTES, type SkillFrontMatter, type SkillInput, type InputType } from './front-matter.ts'
export {
  packSkill, decodeBundle, checkManifest, checkBundlePath, encodeManifest, assembleBundle, bundleIdOf, bundleSizeOf, sha256Hex, resolveLimits,
  SKILL_LIMITS, MAX_BUNDLE_BYTES, MAX_MANIFEST_BYTES, MANIFEST_FORMAT, BUNDLE_MAGIC, INSTALL_RECORD_FILE,
  type SkillBundle, type SkillManifest, type ManifestFile, type SkillLimits
} from './bundle.ts'
export { parseAnnouncement, encodePublish, encodeYank, type SkillAnnouncement, type PublishAnnouncement, type YankAnnouncement } from './announce.ts'
export { Catalog, parseSkillSpec, statusOf, checkUsable, type Publication, type PublicationStatus, type SkillSpec, type AnnouncedShard } from './catalog.ts'
export { openSkillStore, type SkillStore, type InstallRecord } from './store.ts'
export { bundleCid, findBundleProviders, provideBundle } from './providers.ts'
export { openActivityLog, shapeOf, checkActivityEvent, ACTIVITY_NAME, type ActivityLog, type ActivityEvent, type ActivityKind, type Suggestion } from './activity.ts'
export { loadPolicy, checkTrust, policySchema, type SkillTrustPolicy } from './policy.ts'
export {
  createSkillsService,
  type SkillsService, type SkillsServiceOptions, type TeamSkillPort, type SkillSummary, type SkillDetails, type InstalledSkill, type SkillListing,
  type PublishResult, type InstallOptions, type InstallResult, type UpgradeResult, type YankResult
} from './service.ts'
