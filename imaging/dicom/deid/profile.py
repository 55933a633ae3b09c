"""PS3.15 Annex E Table E.1-1: the Basic Application Level Confidentiality Profile as data.

Each row gives an attribute's tag, its keyword, the action of the Basic Profile and
the action of the Retain Longitudinal Temporal Information with Full Dates Option
(``K`` where the option keeps the value, ``-`` where the Basic Profile action stands).
The rows were transcribed from the edition of the standard current in mid-2025;
where transcriptions disagreed, the stricter action was taken (Content Sequence
(0040,A730) is ``X``). Keywords come from the data dictionary; ``-`` marks
attributes added to the standard after pydicom 3.0's dictionary whose keyword is
not established here.

Action codes (PS3.15 E.1.1):

- ``D``: replace with a non-zero length dummy value consistent with the VR;
- ``Z``: replace with a zero length value (or a dummy value);
- ``X``: remove;
- ``K``: keep (sequences are kept and cleaned recursively);
- ``C``: clean (replace with values of similar meaning known not to identify);
- ``U``: replace with a non-zero length UID, consistent within a set of instances;
- ``Z/D``, ``X/Z``, ``X/D``, ``X/Z/D``: the first action unless a later one is needed
  to keep the IOD valid (Type 3 versus Type 2 versus Type 1);
- ``X/Z/U*``: remove unless the sequence is needed, then keep it with its UIDs replaced.

Besides the rows below, the table covers repeating groups (Curve Data (50xx,xxxx),
Overlay Data (60xx,3000), Overlay Comments (60xx,4000): all ``X``) and every private
attribute (``X``); :func:`profile_attribute` answers for those too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, cast, get_args

Action = Literal["D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"]


@dataclass(frozen=True)
class ProfileAttribute:
    """One row of Table E.1-1.

    Attributes:
        tag: The attribute tag as an integer, ``0xGGGGEEEE``.
        keyword: The data dictionary keyword, or ``""`` where none is established here.
        basic: The Basic Profile action.
        full_dates: The action under the Retain Longitudinal Temporal Information with
            Full Dates Option, or ``None`` where the option leaves the Basic action.
    """

    tag: int
    keyword: str
    basic: Action
    full_dates: Action | None = None

    def action(self, *, retain_longitudinal_temporal: bool) -> Action:
        """The action that applies with or without the Full Dates Option."""
        if retain_longitudinal_temporal and self.full_dates is not None:
            return self.full_dates
        return self.basic


# One row per attribute, sorted by tag.
_TABLE = """
tag          keyword                                                       basic   full dates
(0000,1000)  AffectedSOPInstanceUID                                        X       -
(0000,1001)  RequestedSOPInstanceUID                                       U       -
(0002,0003)  MediaStorageSOPInstanceUID                                    U       -
(0004,1511)  ReferencedSOPInstanceUIDInFile                                U       -
(0008,0012)  InstanceCreationDate                                          X/D     K
(0008,0013)  InstanceCreationTime                                          X/Z/D   K
(0008,0014)  InstanceCreatorUID                                            U       -
(0008,0015)  InstanceCoercionDateTime                                      X       K
(0008,0017)  AcquisitionUID                                                U       -
(0008,0018)  SOPInstanceUID                                                U       -
(0008,0019)  PyramidUID                                                    U       -
(0008,0020)  StudyDate                                                     Z       K
(0008,0021)  SeriesDate                                                    X/D     K
(0008,0022)  AcquisitionDate                                               X/Z     K
(0008,0023)  ContentDate                                                   Z/D     K
(0008,0024)  OverlayDate                                                   X       K
(0008,0025)  CurveDate                                                     X       K
(0008,002A)  AcquisitionDateTime                                           X/Z/D   K
(0008,0030)  StudyTime                                                     Z       K
(0008,0031)  SeriesTime                                                    X/D     K
(0008,0032)  AcquisitionTime                                               X/Z     K
(0008,0033)  ContentTime                                                   Z/D     K
(0008,0034)  OverlayTime                                                   X       K
(0008,0035)  CurveTime                                                     X       K
(0008,0050)  AccessionNumber                                               Z       -
(0008,0054)  RetrieveAETitle                                               X       -
(0008,0055)  StationAETitle                                                X       -
(0008,0058)  FailedSOPInstanceUIDList                                      U       -
(0008,0080)  InstitutionName                                               X/Z/D   -
(0008,0081)  InstitutionAddress                                            X       -
(0008,0082)  InstitutionCodeSequence                                       X/Z/D   -
(0008,0090)  ReferringPhysicianName                                        Z       -
(0008,0092)  ReferringPhysicianAddress                                     X       -
(0008,0094)  ReferringPhysicianTelephoneNumbers                            X       -
(0008,0096)  ReferringPhysicianIdentificationSequence                      X       -
(0008,009C)  ConsultingPhysicianName                                       Z       -
(0008,009D)  ConsultingPhysicianIdentificationSequence                     X       -
(0008,0106)  ContextGroupVersion                                           D       K
(0008,0107)  ContextGroupLocalVersion                                      D       K
(0008,0201)  TimezoneOffsetFromUTC                                         X       K
(0008,1000)  NetworkID                                                     X       -
(0008,1010)  StationName                                                   X/Z/D   -
(0008,1030)  StudyDescription                                              X       -
(0008,103E)  SeriesDescription                                             X       -
(0008,1040)  InstitutionalDepartmentName                                   X       -
(0008,1041)  InstitutionalDepartmentTypeCodeSequence                       X       -
(0008,1048)  PhysiciansOfRecord                                            X       -
(0008,1049)  PhysiciansOfRecordIdentificationSequence                      X       -
(0008,1050)  PerformingPhysicianName                                       X       -
(0008,1052)  PerformingPhysicianIdentificationSequence                     X       -
(0008,1060)  NameOfPhysiciansReadingStudy                                  X       -
(0008,1062)  PhysiciansReadingStudyIdentificationSequence                  X       -
(0008,1070)  OperatorsName                                                 X/Z/D   -
(0008,1072)  OperatorIdentificationSequence                                X/D     -
(0008,1080)  AdmittingDiagnosesDescription                                 X       -
(0008,1084)  AdmittingDiagnosesCodeSequence                                X       -
(0008,1088)  PyramidDescription                                            X       -
(0008,1110)  ReferencedStudySequence                                       X/Z     -
(0008,1111)  ReferencedPerformedProcedureStepSequence                      X/Z/D   -
(0008,1120)  ReferencedPatientSequence                                     X       -
(0008,1140)  ReferencedImageSequence                                       X/Z/U*  -
(0008,1155)  ReferencedSOPInstanceUID                                      U       -
(0008,1195)  TransactionUID                                                U       -
(0008,1301)  PrincipalDiagnosisCodeSequence                                X       -
(0008,1302)  PrimaryDiagnosisCodeSequence                                  X       -
(0008,1303)  SecondaryDiagnosesCodeSequence                                X       -
(0008,1304)  HistologicalDiagnosesCodeSequence                             X       -
(0008,2111)  DerivationDescription                                         X       -
(0008,2112)  SourceImageSequence                                           X/Z/U*  -
(0008,3010)  IrradiationEventUID                                           U       -
(0008,4000)  IdentifyingComments                                           X       -
(0010,0010)  PatientName                                                   Z       -
(0010,0011)  PersonNamesToUseSequence                                      X       -
(0010,0012)  NameToUse                                                     X       -
(0010,0013)  NameToUseComment                                              X       -
(0010,0014)  ThirdPersonPronounsSequence                                   X       -
(0010,0015)  PronounCodeSequence                                           X       -
(0010,0016)  PronounComment                                                X       -
(0010,0020)  PatientID                                                     Z/D     -
(0010,0021)  IssuerOfPatientID                                             X       -
(0010,0030)  PatientBirthDate                                              Z       -
(0010,0032)  PatientBirthTime                                              X       -
(0010,0040)  PatientSex                                                    Z       -
(0010,0041)  GenderIdentitySequence                                        X       -
(0010,0042)  SexParametersForClinicalUseCategoryComment                    X       -
(0010,0043)  SexParametersForClinicalUseCategorySequence                   X       -
(0010,0044)  GenderIdentityCodeSequence                                    X       -
(0010,0045)  GenderIdentityComment                                         X       -
(0010,0046)  SexParametersForClinicalUseCategoryCodeSequence               X       -
(0010,0047)  SexParametersForClinicalUseCategoryReference                  X       -
(0010,0050)  PatientInsurancePlanCodeSequence                              X       -
(0010,0101)  PatientPrimaryLanguageCodeSequence                            X       -
(0010,0102)  PatientPrimaryLanguageModifierCodeSequence                    X       -
(0010,1000)  OtherPatientIDs                                               X       -
(0010,1001)  OtherPatientNames                                             X       -
(0010,1002)  OtherPatientIDsSequence                                       X       -
(0010,1005)  PatientBirthName                                              X       -
(0010,1010)  PatientAge                                                    X       -
(0010,1020)  PatientSize                                                   X       -
(0010,1030)  PatientWeight                                                 X       -
(0010,1040)  PatientAddress                                                X       -
(0010,1050)  InsurancePlanIdentification                                   X       -
(0010,1060)  PatientMotherBirthName                                        X       -
(0010,1080)  MilitaryRank                                                  X       -
(0010,1081)  BranchOfService                                               X       -
(0010,1090)  MedicalRecordLocator                                          X       -
(0010,1100)  ReferencedPatientPhotoSequence                                X       -
(0010,2000)  MedicalAlerts                                                 X       -
(0010,2110)  Allergies                                                     X       -
(0010,2150)  CountryOfResidence                                            X       -
(0010,2152)  RegionOfResidence                                             X       -
(0010,2154)  PatientTelephoneNumbers                                       X       -
(0010,2155)  PatientTelecomInformation                                     X       -
(0010,2160)  EthnicGroup                                                   X       -
(0010,2161)  EthnicGroupCodeSequence                                       X       -
(0010,2162)  EthnicGroups                                                  X       -
(0010,2180)  Occupation                                                    X       -
(0010,21A0)  SmokingStatus                                                 X       -
(0010,21B0)  AdditionalPatientHistory                                      X       -
(0010,21C0)  PregnancyStatus                                               X       -
(0010,21D0)  LastMenstrualDate                                             X       K
(0010,21F0)  PatientReligiousPreference                                    X       -
(0010,2203)  PatientSexNeutered                                            X/Z     -
(0010,2297)  ResponsiblePerson                                             X       -
(0010,2299)  ResponsibleOrganization                                       X       -
(0010,4000)  PatientComments                                               X       -
(0012,0010)  ClinicalTrialSponsorName                                      D       -
(0012,0020)  ClinicalTrialProtocolID                                       D       -
(0012,0021)  ClinicalTrialProtocolName                                     Z       -
(0012,0022)  IssuerOfClinicalTrialProtocolID                               X       -
(0012,0023)  OtherClinicalTrialProtocolIDsSequence                         X       -
(0012,0030)  ClinicalTrialSiteID                                           Z       -
(0012,0031)  ClinicalTrialSiteName                                         Z       -
(0012,0032)  IssuerOfClinicalTrialSiteID                                   X       -
(0012,0040)  ClinicalTrialSubjectID                                        D       -
(0012,0041)  IssuerOfClinicalTrialSubjectID                                X       -
(0012,0042)  ClinicalTrialSubjectReadingID                                 D       -
(0012,0043)  IssuerOfClinicalTrialSubjectReadingID                         X       -
(0012,0050)  ClinicalTrialTimePointID                                      Z       -
(0012,0051)  ClinicalTrialTimePointDescription                             X       -
(0012,0055)  IssuerOfClinicalTrialTimePointID                              X       -
(0012,0060)  ClinicalTrialCoordinatingCenterName                           Z       -
(0012,0071)  ClinicalTrialSeriesID                                         X       -
(0012,0072)  ClinicalTrialSeriesDescription                                X       -
(0012,0073)  IssuerOfClinicalTrialSeriesID                                 X       -
(0012,0081)  ClinicalTrialProtocolEthicsCommitteeName                      D       -
(0012,0082)  ClinicalTrialProtocolEthicsCommitteeApprovalNumber            X       -
(0012,0086)  EthicsCommitteeApprovalEffectivenessStartDate                 X       K
(0012,0087)  EthicsCommitteeApprovalEffectivenessEndDate                   X       K
(0014,407C)  CalibrationTime                                               X       K
(0014,407E)  CalibrationDate                                               X       K
(0016,002B)  MakerNote                                                     X       -
(0016,004B)  DeviceSettingDescription                                      X       -
(0016,004D)  CameraOwnerName                                               X       -
(0016,004E)  LensSpecification                                             X       -
(0016,004F)  LensMake                                                      X       -
(0016,0050)  LensModel                                                     X       -
(0016,0051)  LensSerialNumber                                              X       -
(0016,0070)  GPSVersionID                                                  X       -
(0016,0071)  GPSLatitudeRef                                                X       -
(0016,0072)  GPSLatitude                                                   X       -
(0016,0073)  GPSLongitudeRef                                               X       -
(0016,0074)  GPSLongitude                                                  X       -
(0016,0075)  GPSAltitudeRef                                                X       -
(0016,0076)  GPSAltitude                                                   X       -
(0016,0077)  GPSTimeStamp                                                  X       -
(0016,0078)  GPSSatellites                                                 X       -
(0016,0079)  GPSStatus                                                     X       -
(0016,007A)  GPSMeasureMode                                                X       -
(0016,007B)  GPSDOP                                                        X       -
(0016,007C)  GPSSpeedRef                                                   X       -
(0016,007D)  GPSSpeed                                                      X       -
(0016,007E)  GPSTrackRef                                                   X       -
(0016,007F)  GPSTrack                                                      X       -
(0016,0080)  GPSImgDirectionRef                                            X       -
(0016,0081)  GPSImgDirection                                               X       -
(0016,0082)  GPSMapDatum                                                   X       -
(0016,0083)  GPSDestLatitudeRef                                            X       -
(0016,0084)  GPSDestLatitude                                               X       -
(0016,0085)  GPSDestLongitudeRef                                           X       -
(0016,0086)  GPSDestLongitude                                              X       -
(0016,0087)  GPSDestBearingRef                                             X       -
(0016,0088)  GPSDestBearing                                                X       -
(0016,0089)  GPSDestDistanceRef                                            X       -
(0016,008A)  GPSDestDistance                                               X       -
(0016,008B)  GPSProcessingMethod                                           X       -
(0016,008C)  GPSAreaInformation                                            X       -
(0016,008D)  GPSDateStamp                                                  X       K
(0016,008E)  GPSDifferential                                               X       -
(0018,0010)  ContrastBolusAgent                                            Z/D     -
(0018,0027)  InterventionDrugStopTime                                      X       K
(0018,0035)  InterventionDrugStartTime                                     X       K
(0018,1000)  DeviceSerialNumber                                            X/Z/D   -
(0018,1002)  DeviceUID                                                     U       -
(0018,1004)  PlateID                                                       X       -
(0018,1005)  GeneratorID                                                   X       -
(0018,1007)  CassetteID                                                    X       -
(0018,1008)  GantryID                                                      X       -
(0018,1009)  UniqueDeviceIdentifier                                        X       -
(0018,100A)  UDISequence                                                   X       -
(0018,100B)  ManufacturerDeviceClassUID                                    U       -
(0018,1012)  DateOfSecondaryCapture                                        X       K
(0018,1014)  TimeOfSecondaryCapture                                        X       K
(0018,1030)  ProtocolName                                                  X/D     -
(0018,1042)  ContrastBolusStartTime                                        X       K
(0018,1043)  ContrastBolusStopTime                                         X       K
(0018,1072)  RadiopharmaceuticalStartTime                                  X       K
(0018,1073)  RadiopharmaceuticalStopTime                                   X       K
(0018,1078)  RadiopharmaceuticalStartDateTime                              X       K
(0018,1079)  RadiopharmaceuticalStopDateTime                               X       K
(0018,11BB)  AcquisitionFieldOfViewLabel                                   D       -
(0018,1200)  DateOfLastCalibration                                         X       K
(0018,1201)  TimeOfLastCalibration                                         X       K
(0018,1202)  DateTimeOfLastCalibration                                     X       K
(0018,1203)  CalibrationDateTime                                           Z       K
(0018,1204)  DateOfManufacture                                             X       K
(0018,1205)  DateOfInstallation                                            X       K
(0018,1400)  AcquisitionDeviceProcessingDescription                        X/D     -
(0018,2042)  TargetUID                                                     U       -
(0018,4000)  AcquisitionComments                                           X       -
(0018,5011)  TransducerIdentificationSequence                              X       -
(0018,700A)  DetectorID                                                    X/D     -
(0018,700C)  DateOfLastDetectorCalibration                                 X/D     K
(0018,700E)  TimeOfLastDetectorCalibration                                 X/D     K
(0018,9074)  FrameAcquisitionDateTime                                      D       K
(0018,9151)  FrameReferenceDateTime                                        D       K
(0018,9185)  RespiratoryMotionCompensationTechniqueDescription             X       -
(0018,9367)  XRaySourceID                                                  D       -
(0018,9369)  SourceStartDateTime                                           D       K
(0018,936A)  SourceEndDateTime                                             D       K
(0018,9371)  XRayDetectorID                                                D       -
(0018,9373)  XRayDetectorLabel                                             X       -
(0018,937B)  MultienergyAcquisitionDescription                             X       -
(0018,937F)  DecompositionDescription                                      X       -
(0018,9424)  AcquisitionProtocolDescription                                X       -
(0018,9516)  StartAcquisitionDateTime                                      X/D     K
(0018,9517)  EndAcquisitionDateTime                                        X/D     K
(0018,9623)  FunctionalSyncPulse                                           D       K
(0018,9701)  DecayCorrectionDateTime                                       D       K
(0018,9804)  ExclusionStartDateTime                                        D       K
(0018,9919)  InstructionPerformedDateTime                                  Z/D     K
(0018,9937)  RequestedSeriesDescription                                    X       -
(0018,A002)  ContributionDateTime                                          X       K
(0018,A003)  ContributionDescription                                       X       -
(0020,000D)  StudyInstanceUID                                              U       -
(0020,000E)  SeriesInstanceUID                                             U       -
(0020,0010)  StudyID                                                       Z       -
(0020,0027)  PyramidLabel                                                  X       -
(0020,0052)  FrameOfReferenceUID                                           U       -
(0020,0200)  SynchronizationFrameOfReferenceUID                            U       -
(0020,3401)  ModifyingDeviceID                                             X       -
(0020,3403)  ModifiedImageDate                                             X       K
(0020,3405)  ModifiedImageTime                                             X       K
(0020,3406)  ModifiedImageDescription                                      X       -
(0020,4000)  ImageComments                                                 X       -
(0020,9158)  FrameComments                                                 X       -
(0020,9161)  ConcatenationUID                                              U       -
(0020,9164)  DimensionOrganizationUID                                      U       -
(0028,1199)  PaletteColorLookupTableUID                                    U       -
(0028,1214)  LargePaletteColorLookupTableUID                               U       -
(0028,4000)  ImagePresentationComments                                     X       -
(0032,0012)  StudyIDIssuer                                                 X       -
(0032,0032)  StudyVerifiedDate                                             X       K
(0032,0033)  StudyVerifiedTime                                             X       K
(0032,0034)  StudyReadDate                                                 X       K
(0032,0035)  StudyReadTime                                                 X       K
(0032,1000)  ScheduledStudyStartDate                                       X       K
(0032,1001)  ScheduledStudyStartTime                                       X       K
(0032,1010)  ScheduledStudyStopDate                                        X       K
(0032,1011)  ScheduledStudyStopTime                                        X       K
(0032,1020)  ScheduledStudyLocation                                        X       -
(0032,1021)  ScheduledStudyLocationAETitle                                 X       -
(0032,1030)  ReasonForStudy                                                X       -
(0032,1032)  RequestingPhysician                                           X       -
(0032,1033)  RequestingService                                             X       -
(0032,1040)  StudyArrivalDate                                              X       K
(0032,1041)  StudyArrivalTime                                              X       K
(0032,1050)  StudyCompletionDate                                           X       K
(0032,1051)  StudyCompletionTime                                           X       K
(0032,1060)  RequestedProcedureDescription                                 X/Z     -
(0032,1066)  ReasonForVisit                                                X       -
(0032,1067)  ReasonForVisitCodeSequence                                    X       -
(0032,1070)  RequestedContrastAgent                                        X       -
(0032,4000)  StudyComments                                                 X       -
(0034,0001)  FlowIdentifierSequence                                        D       -
(0034,0002)  FlowIdentifier                                                D       -
(0034,0005)  SourceIdentifier                                              D       -
(0034,0007)  FrameOriginTimestamp                                          D       K
(0038,0004)  ReferencedPatientAliasSequence                                X       -
(0038,0010)  AdmissionID                                                   X       -
(0038,0011)  IssuerOfAdmissionID                                           X       -
(0038,0014)  IssuerOfAdmissionIDSequence                                   X       -
(0038,001A)  ScheduledAdmissionDate                                        X       K
(0038,001B)  ScheduledAdmissionTime                                        X       K
(0038,001C)  ScheduledDischargeDate                                        X       K
(0038,001D)  ScheduledDischargeTime                                        X       K
(0038,001E)  ScheduledPatientInstitutionResidence                          X       -
(0038,0020)  AdmittingDate                                                 X       K
(0038,0021)  AdmittingTime                                                 X       K
(0038,0030)  DischargeDate                                                 X       K
(0038,0032)  DischargeTime                                                 X       K
(0038,0040)  DischargeDiagnosisDescription                                 X       -
(0038,0050)  SpecialNeeds                                                  X       -
(0038,0060)  ServiceEpisodeID                                              X       -
(0038,0061)  IssuerOfServiceEpisodeID                                      X       -
(0038,0062)  ServiceEpisodeDescription                                     X       -
(0038,0064)  IssuerOfServiceEpisodeIDSequence                              X       -
(0038,0300)  CurrentPatientLocation                                        X       -
(0038,0400)  PatientInstitutionResidence                                   X       -
(0038,0500)  PatientState                                                  X       -
(0038,4000)  VisitComments                                                 X       -
(003A,0310)  MultiplexGroupUID                                             U       -
(003A,0314)  ImpedanceMeasurementDateTime                                  D       K
(003A,0329)  WaveformFilterDescription                                     X       -
(003A,032B)  FilterLookupTableDescription                                  X       -
(0040,0001)  ScheduledStationAETitle                                       X       -
(0040,0002)  ScheduledProcedureStepStartDate                               X       K
(0040,0003)  ScheduledProcedureStepStartTime                               X       K
(0040,0004)  ScheduledProcedureStepEndDate                                 X       K
(0040,0005)  ScheduledProcedureStepEndTime                                 X       K
(0040,0006)  ScheduledPerformingPhysicianName                              X       -
(0040,0007)  ScheduledProcedureStepDescription                             X       -
(0040,0009)  ScheduledProcedureStepID                                      X       -
(0040,000B)  ScheduledPerformingPhysicianIdentificationSequence            X       -
(0040,0010)  ScheduledStationName                                          X       -
(0040,0011)  ScheduledProcedureStepLocation                                X       -
(0040,0012)  PreMedication                                                 X       -
(0040,0241)  PerformedStationAETitle                                       X       -
(0040,0242)  PerformedStationName                                          X       -
(0040,0243)  PerformedLocation                                             X       -
(0040,0244)  PerformedProcedureStepStartDate                               X       K
(0040,0245)  PerformedProcedureStepStartTime                               X       K
(0040,0250)  PerformedProcedureStepEndDate                                 X       K
(0040,0251)  PerformedProcedureStepEndTime                                 X       K
(0040,0253)  PerformedProcedureStepID                                      X       -
(0040,0254)  PerformedProcedureStepDescription                             X       -
(0040,0275)  RequestAttributesSequence                                     X       -
(0040,0280)  CommentsOnThePerformedProcedureStep                           X       -
(0040,0310)  CommentsOnRadiationDose                                       X       -
(0040,050A)  SpecimenAccessionNumber                                       X       -
(0040,0512)  ContainerIdentifier                                           D       -
(0040,0513)  IssuerOfTheContainerIdentifierSequence                        Z       -
(0040,051A)  ContainerDescription                                          X       -
(0040,0551)  SpecimenIdentifier                                            D       -
(0040,0554)  SpecimenUID                                                   U       -
(0040,0555)  AcquisitionContextSequence                                    X/Z     -
(0040,0562)  IssuerOfTheSpecimenIdentifierSequence                         Z       -
(0040,0600)  SpecimenShortDescription                                      X       -
(0040,0602)  SpecimenDetailedDescription                                   X       -
(0040,0610)  SpecimenPreparationSequence                                   Z       -
(0040,06FA)  SlideIdentifier                                               X       -
(0040,1001)  RequestedProcedureID                                          X       -
(0040,1002)  ReasonForTheRequestedProcedure                                X       -
(0040,1004)  PatientTransportArrangements                                  X       -
(0040,1005)  RequestedProcedureLocation                                    X       -
(0040,100A)  ReasonForRequestedProcedureCodeSequence                       X       -
(0040,1010)  NamesOfIntendedRecipientsOfResults                            X       -
(0040,1011)  IntendedRecipientsOfResultsIdentificationSequence             X       -
(0040,1101)  PersonIdentificationCodeSequence                              D       -
(0040,1102)  PersonAddress                                                 X       -
(0040,1103)  PersonTelephoneNumbers                                        X       -
(0040,1104)  PersonTelecomInformation                                      X       -
(0040,1400)  RequestedProcedureComments                                    X       -
(0040,2001)  ReasonForTheImagingServiceRequest                             X       -
(0040,2004)  IssueDateOfImagingServiceRequest                              X       K
(0040,2005)  IssueTimeOfImagingServiceRequest                              X       K
(0040,2008)  OrderEnteredBy                                                X       -
(0040,2009)  OrderEntererLocation                                          X       -
(0040,2010)  OrderCallbackPhoneNumber                                      X       -
(0040,2011)  OrderCallbackTelecomInformation                               X       -
(0040,2016)  PlacerOrderNumberImagingServiceRequest                        Z       -
(0040,2017)  FillerOrderNumberImagingServiceRequest                        Z       -
(0040,2400)  ImagingServiceRequestComments                                 X       -
(0040,3001)  ConfidentialityConstraintOnPatientDataDescription             X       -
(0040,4005)  ScheduledProcedureStepStartDateTime                           X       K
(0040,4008)  ScheduledProcedureStepExpirationDateTime                      X       K
(0040,4010)  ScheduledProcedureStepModificationDateTime                    X       K
(0040,4011)  ExpectedCompletionDateTime                                    X       K
(0040,4023)  ReferencedGeneralPurposeScheduledProcedureStepTransactionUID  U       -
(0040,4025)  ScheduledStationNameCodeSequence                              X       -
(0040,4027)  ScheduledStationGeographicLocationCodeSequence                X       -
(0040,4028)  PerformedStationNameCodeSequence                              X       -
(0040,4030)  PerformedStationGeographicLocationCodeSequence                X       -
(0040,4034)  ScheduledHumanPerformersSequence                              X       -
(0040,4035)  ActualHumanPerformersSequence                                 X       -
(0040,4036)  HumanPerformerOrganization                                    X       -
(0040,4037)  HumanPerformerName                                            X       -
(0040,4050)  PerformedProcedureStepStartDateTime                           X       K
(0040,4051)  PerformedProcedureStepEndDateTime                             X       K
(0040,4052)  ProcedureStepCancellationDateTime                             X       K
(0040,A023)  FindingsGroupRecordingDateTrial                               X       K
(0040,A024)  FindingsGroupRecordingTimeTrial                               X       K
(0040,A027)  VerifyingOrganization                                         D       -
(0040,A030)  VerificationDateTime                                          D       K
(0040,A032)  ObservationDateTime                                           X/D     K
(0040,A033)  ObservationStartDateTime                                      X       K
(0040,A034)  -                                                             X       K
(0040,A035)  -                                                             X       K
(0040,A073)  VerifyingObserverSequence                                     D       -
(0040,A075)  VerifyingObserverName                                         D       -
(0040,A078)  AuthorObserverSequence                                        X       -
(0040,A07A)  ParticipantSequence                                           X       -
(0040,A07C)  CustodialOrganizationSequence                                 X       -
(0040,A082)  ParticipationDateTime                                         Z       K
(0040,A088)  VerifyingObserverIdentificationCodeSequence                   Z       -
(0040,A110)  DateOfDocumentOrVerbalTransactionTrial                        X       K
(0040,A112)  TimeOfDocumentCreationOrVerbalTransactionTrial                X       K
(0040,A120)  DateTime                                                      D       K
(0040,A121)  Date                                                          D       K
(0040,A122)  Time                                                          D       K
(0040,A123)  PersonName                                                    D       -
(0040,A124)  UID                                                           U       -
(0040,A13A)  ReferencedDateTime                                            D       K
(0040,A171)  ObservationUID                                                U       -
(0040,A172)  ReferencedObservationUIDTrial                                 U       -
(0040,A192)  ObservationDateTrial                                          X       K
(0040,A193)  ObservationTimeTrial                                          X       K
(0040,A307)  CurrentObserverTrial                                          X       -
(0040,A352)  VerbalSourceTrial                                             X       -
(0040,A353)  AddressTrial                                                  X       -
(0040,A354)  TelephoneNumberTrial                                          X       -
(0040,A358)  VerbalSourceIdentifierCodeSequenceTrial                       X       -
(0040,A402)  ObservationSubjectUIDTrial                                    U       -
(0040,A730)  ContentSequence                                               X       -
(0040,B034)  -                                                             X       K
(0040,B036)  -                                                             X       K
(0040,B03B)  -                                                             X       -
(0040,B03F)  -                                                             X       -
(0040,DB06)  TemplateVersion                                               X       K
(0040,DB07)  TemplateLocalVersion                                          X       K
(0040,DB0C)  TemplateExtensionOrganizationUID                              U       -
(0040,DB0D)  TemplateExtensionCreatorUID                                   U       -
(0040,E004)  HL7DocumentEffectiveTime                                      X       K
(0042,0011)  EncapsulatedDocument                                          D       -
(0044,0004)  ApprovalStatusDateTime                                        X       K
(0044,000B)  ProductExpirationDateTime                                     X       K
(0044,0010)  SubstanceAdministrationDateTime                               X       K
(0044,0104)  AssertionDateTime                                             D       K
(0044,0105)  AssertionExpirationDateTime                                   X       K
(0050,001B)  ContainerComponentID                                          X       -
(0050,0020)  DeviceDescription                                             X       -
(0050,0021)  LongDeviceDescription                                         X       -
(0062,0021)  TrackingUID                                                   U       -
(0064,0003)  SourceFrameOfReferenceUID                                     U       -
(0068,6226)  EffectiveDateTime                                             D       K
(0068,6270)  InformationIssueDateTime                                      D       K
(006A,0003)  AnnotationGroupUID                                            D       -
(006A,0005)  AnnotationGroupLabel                                          D       -
(006A,0006)  AnnotationGroupDescription                                    X       -
(0070,0001)  GraphicAnnotationSequence                                     D       -
(0070,0082)  PresentationCreationDate                                      X       K
(0070,0083)  PresentationCreationTime                                      X       K
(0070,0084)  ContentCreatorName                                            Z/D     -
(0070,0086)  ContentCreatorIdentificationCodeSequence                      X       -
(0070,031A)  FiducialUID                                                   U       -
(0070,1101)  PresentationDisplayCollectionUID                              U       -
(0070,1102)  PresentationSequenceCollectionUID                             U       -
(0072,000A)  HangingProtocolCreationDateTime                               D       K
(0072,005E)  SelectorAEValue                                               D       -
(0072,005F)  SelectorASValue                                               D       -
(0072,0061)  SelectorDAValue                                               D       K
(0072,0063)  SelectorDTValue                                               D       K
(0072,0065)  SelectorOBValue                                               D       -
(0072,0066)  SelectorLOValue                                               D       -
(0072,0068)  SelectorLTValue                                               D       -
(0072,006A)  SelectorPNValue                                               D       -
(0072,006B)  SelectorTMValue                                               D       K
(0072,006C)  SelectorSHValue                                               D       -
(0072,006D)  SelectorUNValue                                               D       -
(0072,006E)  SelectorSTValue                                               D       -
(0072,0070)  SelectorUTValue                                               D       -
(0072,0071)  SelectorURValue                                               D       -
(0074,1234)  ReceivingAE                                                   X       -
(0074,1236)  RequestingAE                                                  X       -
(0088,0140)  StorageMediaFileSetUID                                        U       -
(0088,0200)  IconImageSequence                                             X       -
(0088,0904)  TopicTitle                                                    X       -
(0088,0906)  TopicSubject                                                  X       -
(0088,0910)  TopicAuthor                                                   X       -
(0088,0912)  TopicKeywords                                                 X       -
(0100,0420)  SOPAuthorizationDateTime                                      X       K
(0400,0100)  DigitalSignatureUID                                           U       -
(0400,0105)  DigitalSignatureDateTime                                      D       K
(0400,0115)  CertificateOfSigner                                           D       -
(0400,0310)  CertifiedTimestamp                                            X       K
(0400,0402)  ReferencedDigitalSignatureSequence                            X       -
(0400,0403)  ReferencedSOPInstanceMACSequence                              X       -
(0400,0404)  MAC                                                           X       -
(0400,0550)  ModifiedAttributesSequence                                    X       -
(0400,0551)  NonconformingModifiedAttributesSequence                       X       -
(0400,0552)  NonconformingDataElementValue                                 X       -
(0400,0561)  OriginalAttributesSequence                                    X       -
(0400,0562)  AttributeModificationDateTime                                 D       K
(0400,0563)  ModifyingSystem                                               D       -
(0400,0564)  SourceOfPreviousValues                                        Z       -
(0400,0565)  ReasonForTheAttributeModification                             D       -
(0400,0600)  InstanceOriginStatus                                          X       -
(2030,0020)  TextString                                                    X       -
(2100,0040)  CreationDate                                                  X       K
(2100,0050)  CreationTime                                                  X       K
(2100,0070)  Originator                                                    X       -
(2100,0140)  DestinationAE                                                 D       -
(2200,0002)  LabelText                                                     X/Z     -
(2200,0005)  BarcodeValue                                                  X/Z     -
(3002,0121)  PositionAcquisitionTemplateName                               X       -
(3002,0123)  PositionAcquisitionTemplateDescription                        X       -
(3006,0002)  StructureSetLabel                                             D       -
(3006,0004)  StructureSetName                                              X       -
(3006,0006)  StructureSetDescription                                       X       -
(3006,0008)  StructureSetDate                                              Z       K
(3006,0009)  StructureSetTime                                              Z       K
(3006,0024)  ReferencedFrameOfReferenceUID                                 U       -
(3006,0026)  ROIName                                                       Z       -
(3006,0028)  ROIDescription                                                X       -
(3006,002D)  ROIDateTime                                                   X       K
(3006,002E)  ROIObservationDateTime                                        X       K
(3006,0038)  ROIGenerationDescription                                      X       -
(3006,004D)  ROICreatorSequence                                            X       -
(3006,004E)  ROIInterpreterSequence                                        X       -
(3006,0085)  ROIObservationLabel                                           X       -
(3006,0088)  ROIObservationDescription                                     X       -
(3006,00A6)  ROIInterpreter                                                Z       -
(3006,00C2)  RelatedFrameOfReferenceUID                                    U       -
(3008,0024)  TreatmentControlPointDate                                     D       K
(3008,0025)  TreatmentControlPointTime                                     D       K
(3008,0054)  FirstTreatmentDate                                            X/D     K
(3008,0056)  MostRecentTreatmentDate                                       X/D     K
(3008,0105)  SourceSerialNumber                                            X/Z     -
(3008,0162)  SafePositionExitDate                                          D       K
(3008,0164)  SafePositionExitTime                                          D       K
(3008,0166)  SafePositionReturnDate                                        D       K
(3008,0168)  SafePositionReturnTime                                        D       K
(3008,0250)  TreatmentDate                                                 X/D     K
(3008,0251)  TreatmentTime                                                 X/D     K
(300A,0002)  RTPlanLabel                                                   D       -
(300A,0003)  RTPlanName                                                    X       -
(300A,0004)  RTPlanDescription                                             X       -
(300A,0006)  RTPlanDate                                                    X/D     K
(300A,0007)  RTPlanTime                                                    X/D     K
(300A,000B)  TreatmentSites                                                X       -
(300A,000E)  PrescriptionDescription                                       X       -
(300A,0013)  DoseReferenceUID                                              U       -
(300A,0016)  DoseReferenceDescription                                      X       -
(300A,0054)  TableTopPositionAlignmentUID                                  U       -
(300A,0072)  FractionGroupDescription                                      X       -
(300A,0083)  ReferencedDoseReferenceUID                                    U       -
(300A,00B2)  TreatmentMachineName                                          X/Z     -
(300A,00C3)  BeamDescription                                               X       -
(300A,00DD)  BolusDescription                                              X       -
(300A,0196)  FixationDeviceDescription                                     X       -
(300A,01A6)  ShieldingDeviceDescription                                    X       -
(300A,01B2)  SetupTechniqueDescription                                     X       -
(300A,0216)  SourceManufacturer                                            X       -
(300A,022C)  SourceStrengthReferenceDate                                   D       K
(300A,022E)  SourceStrengthReferenceTime                                   D       K
(300A,02EB)  CompensatorDescription                                        X       -
(300A,0608)  TreatmentPositionGroupLabel                                   D       -
(300A,0609)  TreatmentPositionGroupUID                                     U       -
(300A,0611)  RTAccessoryHolderSlotID                                       Z       -
(300A,0615)  RTAccessoryDeviceSlotID                                       Z       -
(300A,0619)  RadiationDoseIdentificationLabel                              D       -
(300A,0623)  RadiationDoseInVivoMeasurementLabel                           D       -
(300A,062A)  RTToleranceSetLabel                                           D       -
(300A,0650)  PatientSetupUID                                               U       -
(300A,0676)  EquipmentFrameOfReferenceDescription                          X       -
(300A,067C)  RadiationGenerationModeLabel                                  D       -
(300A,067D)  RadiationGenerationModeDescription                            Z       -
(300A,0700)  TreatmentSessionUID                                           U       -
(300A,0734)  TreatmentToleranceViolationDescription                        D       -
(300A,0736)  TreatmentToleranceViolationDateTime                           D       K
(300A,073A)  RecordedRTControlPointDateTime                                D       K
(300A,0741)  InterlockDateTime                                             D       K
(300A,0742)  InterlockDescription                                          D       -
(300A,0760)  OverrideDateTime                                              D       K
(300A,0783)  InterlockOriginDescription                                    D       -
(300A,0785)  ReferencedTreatmentPositionGroupUID                           U       -
(300A,078E)  PatientTreatmentPreparationProcedureParameterDescription      X       -
(300A,0792)  PatientTreatmentPreparationMethodDescription                  X       -
(300A,0794)  PatientSetupPhotoDescription                                  X       -
(300A,079A)  DisplacementReferenceLabel                                    X       -
(300C,0113)  ReasonForOmissionDescription                                  X       -
(300C,0127)  BeamHoldTransitionDateTime                                    D       K
(300E,0004)  ReviewDate                                                    Z       K
(300E,0005)  ReviewTime                                                    Z       K
(300E,0008)  ReviewerName                                                  X/Z     -
(3010,0006)  ConceptualVolumeUID                                           U       -
(3010,000B)  ReferencedConceptualVolumeUID                                 U       -
(3010,000F)  ConceptualVolumeCombinationDescription                        Z       -
(3010,0013)  ConstituentConceptualVolumeUID                                U       -
(3010,0015)  SourceConceptualVolumeUID                                     U       -
(3010,0017)  ConceptualVolumeDescription                                   Z       -
(3010,001B)  DeviceAlternateIdentifier                                     Z       -
(3010,002D)  DeviceLabel                                                   D       -
(3010,0031)  ReferencedFiducialsUID                                        U       -
(3010,0033)  UserContentLabel                                              D       -
(3010,0034)  UserContentLongLabel                                          D       -
(3010,0035)  EntityLabel                                                   D       -
(3010,0036)  EntityName                                                    X       -
(3010,0037)  EntityDescription                                             X       -
(3010,0038)  EntityLongLabel                                               D       -
(3010,003B)  RTTreatmentPhaseUID                                           U       -
(3010,0043)  ManufacturerDeviceIdentifier                                  Z       -
(3010,004C)  IntendedPhaseStartDate                                        X/D     K
(3010,004D)  IntendedPhaseEndDate                                          X/D     K
(3010,0054)  RTPrescriptionLabel                                           D       -
(3010,0056)  RTTreatmentApproachLabel                                      X/D     -
(3010,005A)  RTPhysicianIntentNarrative                                    Z       -
(3010,005C)  ReasonForSuperseding                                          Z       -
(3010,0061)  PriorTreatmentDoseDescription                                 X       -
(3010,006E)  DosimetricObjectiveUID                                        U       -
(3010,006F)  ReferencedDosimetricObjectiveUID                              U       -
(3010,0077)  TreatmentSite                                                 X/D     -
(3010,007A)  TreatmentTechniqueNotes                                       Z       -
(3010,007B)  PrescriptionNotes                                             Z       -
(3010,007F)  FractionationNotes                                            Z       -
(3010,0081)  PrescriptionNotesSequence                                     Z       -
(3010,0085)  IntendedFractionStartTime                                     X       K
(4000,0010)  Arbitrary                                                     X       -
(4000,4000)  TextComments                                                  X       -
(4008,0040)  ResultsID                                                     X       -
(4008,0042)  ResultsIDIssuer                                               X       -
(4008,0100)  InterpretationRecordedDate                                    X       K
(4008,0101)  InterpretationRecordedTime                                    X       K
(4008,0102)  InterpretationRecorder                                        X       -
(4008,0108)  InterpretationTranscriptionDate                               X       K
(4008,0109)  InterpretationTranscriptionTime                               X       K
(4008,010A)  InterpretationTranscriber                                     X       -
(4008,010B)  InterpretationText                                            X       -
(4008,010C)  InterpretationAuthor                                          X       -
(4008,0111)  InterpretationApproverSequence                                X       -
(4008,0112)  InterpretationApprovalDate                                    X       K
(4008,0113)  InterpretationApprovalTime                                    X       K
(4008,0114)  PhysicianApprovingInterpretation                              X       -
(4008,0115)  InterpretationDiagnosisDescription                            X       -
(4008,0118)  ResultsDistributionListSequence                               X       -
(4008,0119)  DistributionName                                              X       -
(4008,011A)  DistributionAddress                                           X       -
(4008,0200)  InterpretationID                                              X       -
(4008,0202)  InterpretationIDIssuer                                        X       -
(4008,0300)  Impressions                                                   X       -
(4008,4000)  ResultsComments                                               X       -
(FFFA,FFFA)  DigitalSignaturesSequence                                     X       -
(FFFC,FFFC)  DataSetTrailingPadding                                        X       -
"""

_CURVE_DATA = ProfileAttribute(tag=0x50000000, keyword="CurveData", basic="X")
_OVERLAY_DATA = ProfileAttribute(tag=0x60003000, keyword="OverlayData", basic="X")
_OVERLAY_COMMENTS = ProfileAttribute(tag=0x60004000, keyword="OverlayComments", basic="X")


def _parse(table: str) -> dict[int, ProfileAttribute]:
    rows: dict[int, ProfileAttribute] = {}
    actions = get_args(Action)
    for line in table.strip().splitlines()[1:]:
        tag_text, keyword, basic, full_dates = line.split()
        tag = int(tag_text[1:5] + tag_text[6:10], 16)
        for action in (basic, full_dates):
            if action != "-" and action not in actions:
                raise ValueError(f"Table E.1-1 row {tag_text}: unknown action {action!r}")
        rows[tag] = ProfileAttribute(
            tag=tag,
            keyword="" if keyword == "-" else keyword,
            basic=cast(Action, basic),
            full_dates=None if full_dates == "-" else cast(Action, full_dates),
        )
    return rows


BASIC_PROFILE: Mapping[int, ProfileAttribute] = MappingProxyType(_parse(_TABLE))
"""Table E.1-1 rows by tag (private attributes and repeating groups excluded)."""


def profile_attribute(tag: int) -> ProfileAttribute | None:
    """The Table E.1-1 row that covers ``tag``, or ``None`` (the attribute is kept).

    Private attributes are not answered here: the profile removes every one of them.
    """
    row = BASIC_PROFILE.get(tag)
    if row is not None:
        return row
    group, element = tag >> 16, tag & 0xFFFF
    # Repeating groups: the even groups 5000-501E (curves) and 6000-601E (overlays).
    if 0x5000 <= group <= 0x501E and group % 2 == 0:
        return _CURVE_DATA
    if 0x6000 <= group <= 0x601E and group % 2 == 0:
        if element == 0x3000:
            return _OVERLAY_DATA
        if element == 0x4000:
            return _OVERLAY_COMMENTS
    return None
