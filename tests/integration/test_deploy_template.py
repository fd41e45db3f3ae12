"""The production template: valid CloudFormation, the names the code uses, and least privilege per role.

The template is read as data (its intrinsic functions rendered as text: `!Ref X` -> `${X}`,
`!GetAtt X.Arn` -> `${X.Arn}`, `!Sub` kept as written), and every IAM role's statements are
compared with the exact (action, resource) pairs this test spells out from what each service does.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from shared.config import QUEUE_ROLES, Settings

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "template.yaml"
WORKERS = {"ingest": "ingest", "compute": "compute", "loader": "load", "publisher": "publish"}  # service -> its queue
NEXT_QUEUE = {"ingest": "compute", "compute": "load", "loader": "publish", "publisher": None}


class _Tagged:
    def __init__(self, tag: str, value: Any) -> None:
        self.tag, self.value = tag, value


def _construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> _Tagged:
    if isinstance(node, yaml.ScalarNode):
        return _Tagged(suffix, loader.construct_scalar(node))
    if isinstance(node, yaml.SequenceNode):
        return _Tagged(suffix, loader.construct_sequence(node, deep=True))
    return _Tagged(suffix, loader.construct_mapping(node, deep=True))


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_multi_constructor("!", _construct)


def render(node: Any) -> Any:
    """A template value with its intrinsic functions written out as text, recursively."""
    if isinstance(node, _Tagged):
        if node.tag == "Ref":
            return "${%s}" % node.value
        if node.tag == "GetAtt":
            return "${%s}" % (node.value if isinstance(node.value, str) else ".".join(node.value))
        if node.tag == "Sub":
            if isinstance(node.value, str):
                return node.value
            text, variables = node.value
            for name, value in variables.items():
                text = text.replace("${%s}" % name, str(render(value)))
            return text
        if node.tag == "If":
            condition, yes, no = node.value
            return "{%s ? %s : %s}" % (condition, render(yes), render(no))
        return {node.tag: render(node.value)}
    if isinstance(node, dict):
        return {k: render(v) for k, v in node.items()}
    if isinstance(node, list):
        return [render(v) for v in node]
    return node


def load_template() -> dict[str, Any]:
    return render(yaml.load(TEMPLATE.read_text(), Loader=_Loader))  # noqa: S506 - a SafeLoader subclass


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_grants(role: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (action, resource) an IAM role's inline policies allow; managed policies are reported as such."""
    grants: set[tuple[str, str]] = set()
    for arn in role["Properties"].get("ManagedPolicyArns", []):
        grants.add(("managed-policy", arn))
    for policy in role["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            suffix = ""
            if "Condition" in statement:
                suffix = f" if {statement['Condition']}"
            for action in _listed(statement["Action"]):
                for resource in _listed(statement["Resource"]):
                    grants.add((action, resource + suffix))
    return grants


S3 = "arn:${AWS::Partition}:s3:::${Prefix}"
STAGING_OBJECTS = f"{S3}-staging/staging/*"
STAGING_LIST = f"{S3}-staging if {{'StringLike': {{'s3:prefix': 'staging/*'}}}}"
QUEUE_ARN = {"ingest": "${IngestQueue.Arn}", "compute": "${ComputeQueue.Arn}", "load": "${LoadQueue.Arn}", "publish": "${PublishQueue.Arn}"}
DLQ_ARN = {"ingest": "${IngestDLQ.Arn}", "compute": "${ComputeDLQ.Arn}", "load": "${LoadDLQ.Arn}", "publish": "${PublishDLQ.Arn}"}
OWN_QUEUE_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:SendMessage", "sqs:GetQueueUrl")


def _queues(service: str) -> set[tuple[str, str]]:
    queue = WORKERS[service]
    grants = {(a, QUEUE_ARN[queue]) for a in OWN_QUEUE_ACTIONS}
    grants |= {("sqs:SendMessage", DLQ_ARN[queue]), ("sqs:GetQueueUrl", DLQ_ARN[queue])}
    if NEXT_QUEUE[service]:
        nxt = QUEUE_ARN[NEXT_QUEUE[service]]  # type: ignore[index]
        grants |= {("sqs:SendMessage", nxt), ("sqs:GetQueueUrl", nxt)}
    return grants


EMR_CLUSTER = "arn:${AWS::Partition}:elasticmapreduce:${AWS::Region}:${AWS::AccountId}:cluster/{CreateEmr ? ${EmrCluster} : ${EmrClusterId}}"
EXPECTED: dict[str, set[tuple[str, str]]] = {
    "IngestTaskRole": _queues("ingest")
    | {("s3:GetObject", f"{S3}-uploads/uploads/*"), ("s3:GetObjectVersion", f"{S3}-uploads/uploads/*")}
    | {("s3:GetObject", STAGING_OBJECTS), ("s3:PutObject", STAGING_OBJECTS)}
    | {(a, "${VersionsTable.Arn}") for a in ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")},
    "ComputeTaskRole": _queues("compute")
    | {("s3:GetObject", STAGING_OBJECTS), ("s3:PutObject", STAGING_OBJECTS), ("s3:ListBucket", STAGING_LIST)}
    | {(a, "${VersionsTable.Arn}") for a in ("dynamodb:GetItem", "dynamodb:UpdateItem")}
    | {("elasticmapreduce:AddJobFlowSteps", EMR_CLUSTER), ("elasticmapreduce:DescribeStep", EMR_CLUSTER)},
    "LoaderTaskRole": _queues("loader")
    | {("s3:GetObject", STAGING_OBJECTS), ("s3:PutObject", STAGING_OBJECTS), ("s3:ListBucket", STAGING_LIST)}
    # BulkLoad's split halves of an HFile spanning a region boundary, and only those.
    | {(a, "arn:${AWS::Partition}:s3:::${Prefix}-staging/staging/*/.tmp/*") for a in ("s3:PutObject", "s3:DeleteObject")}
    | {(a, "${VersionsTable.Arn}") for a in ("dynamodb:GetItem", "dynamodb:UpdateItem")},
    "PublisherTaskRole": _queues("publisher")
    | {("s3:GetObject", STAGING_OBJECTS), ("s3:ListBucket", STAGING_LIST)}
    | {(a, "${VersionsTable.Arn}") for a in ("dynamodb:GetItem", "dynamodb:UpdateItem")}
    | {("dynamodb:GetItem", "${DatasetsTable.Arn}"), ("dynamodb:PutItem", "${DatasetsTable.Arn}")},
    "QueryRole": {(a, "${DatasetsTable.Arn}") for a in ("dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan")}
    | {(a, "${VersionsTable.Arn}") for a in ("dynamodb:GetItem", "dynamodb:Query")}
    | {(a, "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/lambda/${Prefix}-query:*") for a in ("logs:CreateLogStream", "logs:PutLogEvents")}
    | {
        (a, "*")
        for a in (
            "ec2:CreateNetworkInterface",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DeleteNetworkInterface",
            "ec2:AssignPrivateIpAddresses",
            "ec2:UnassignPrivateIpAddresses",
        )
    },
    "ExecutionRole": {("ecr:GetAuthorizationToken", "*")}
    | {
        (a, "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/${ImageRepository}")
        for a in ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")
    }
    | {(a, "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/${Prefix}/services:*") for a in ("logs:CreateLogStream", "logs:PutLogEvents")},
    "EmrInstanceRole": {(a, STAGING_OBJECTS) for a in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")}
    | {("s3:PutObject", f"{S3}-staging/emr-logs/*"), ("s3:ListBucket", f"{S3}-staging")}
    | {(a, f"{S3}-hbase/*") for a in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")}
    | {("s3:ListBucket", f"{S3}-hbase"), ("s3:GetObject", "arn:${AWS::Partition}:s3:::${ArtifactsBucket}/${EmrCodePrefix}/*")},
    "EmrServiceRole": {("managed-policy", "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2")},
}
# Read actions of the data services; the query role holds no other action on them.
READ_ONLY = {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan", "dynamodb:BatchGetItem", "dynamodb:DescribeTable"}
DATA_SERVICES = ("s3:", "sqs:", "dynamodb:", "elasticmapreduce:", "sns:", "lambda:", "iam:")


def test_template_passes_cfn_lint() -> None:
    lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent))
    assert lint, "cfn-lint is in the test extra"
    done = subprocess.run([lint, str(TEMPLATE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_role_holds_exactly_its_actions_and_resources() -> None:
    resources = load_template()["Resources"]
    roles = {name: r for name, r in resources.items() if r["Type"] == "AWS::IAM::Role"}
    assert set(roles) == set(EXPECTED), "a role was added or removed: give it its expected grants here"
    for name, role in roles.items():
        granted = role_grants(role)
        assert granted == EXPECTED[name], (
            f"{name}: extra {sorted(granted - EXPECTED[name])}, missing {sorted(EXPECTED[name] - granted)}"
        )


def test_query_role_has_no_write_action_on_any_data_service() -> None:
    resources = load_template()["Resources"]
    actions = {action for action, _ in role_grants(resources["QueryRole"])}
    on_data = {a for a in actions if a.startswith(DATA_SERVICES)}
    assert on_data and on_data <= READ_ONLY, sorted(on_data - READ_ONLY)
    assert not any(a.startswith(("s3:", "sqs:", "elasticmapreduce:")) for a in actions)
    assert resources["QueryFunction"]["Properties"]["Role"] == "${QueryRole.Arn}"


def test_one_ecs_service_per_worker_with_its_own_role_command_and_service_name() -> None:
    resources = load_template()["Resources"]
    services = {r["Properties"]["ServiceName"]: r for r in resources.values() if r["Type"] == "AWS::ECS::Service"}
    assert set(services) == set(WORKERS)
    task_roles = set()
    for service, definition in services.items():
        task_name = definition["Properties"]["TaskDefinition"].strip("${}")
        task = resources[task_name]["Properties"]
        assert task["ExecutionRoleArn"] == "${ExecutionRole.Arn}"
        task_roles.add(task["TaskRoleArn"])
        assert task["TaskRoleArn"] == "${%sTaskRole.Arn}" % service.capitalize()
        (container,) = task["ContainerDefinitions"]
        env = {e["Name"]: e["Value"] for e in container["Environment"]}
        assert env["WIDEVIEWS_SERVICE"] == service
        assert env["WIDEVIEWS_NAME_PREFIX"] == "${Prefix}"
        # The image's entrypoint is `python -m`: the command is one module, which must exist.
        (module,) = container["Command"]
        assert module == f"services.{service}.main" and importlib.util.find_spec(module) is not None
        assert container["Image"].endswith(f"/${{ImageRepository}}:{service}-${{ImageTag}}")
        # Scaled on its own queue's backlog per task.
        policy = next(
            r for r in resources.values()
            if r["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy"
            and resources[r["Properties"]["ScalingTargetId"].strip("${}")]["Properties"]["ResourceId"].endswith(f"{task_name.removesuffix('Task')}Service.Name}}")
        )
        metrics = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]["Metrics"]
        by_id = {m["Id"]: m for m in metrics}
        queue_dimension = by_id["messages"]["MetricStat"]["Metric"]["Dimensions"][0]["Value"]
        assert queue_dimension == QUEUE_ARN[WORKERS[service]].replace(".Arn", ".QueueName")
        assert by_id["messages"]["MetricStat"]["Metric"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert by_id["tasks"]["MetricStat"]["Metric"]["MetricName"] == "RunningTaskCount"
        assert by_id["backlog_per_task"]["Expression"] == "messages / tasks"
    assert len(task_roles) == 4
    dockerfile = (TEMPLATE.parents[1] / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m"]' in dockerfile


def test_every_queue_has_a_dlq_depth_alarm_and_an_oldest_message_alarm() -> None:
    resources = load_template()["Resources"]
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    watched = {(a["MetricName"], a["Dimensions"][0]["Value"]) for a in alarms if a["Namespace"] == "AWS/SQS"}
    for role in QUEUE_ROLES:
        assert ("ApproximateNumberOfMessagesVisible", DLQ_ARN[role].replace(".Arn", ".QueueName")) in watched
        assert ("ApproximateAgeOfOldestMessage", QUEUE_ARN[role].replace(".Arn", ".QueueName")) in watched
    assert all(a["AlarmActions"] == ["${AlarmTopic}"] for a in alarms)


def test_buckets_are_encrypted_private_and_staging_expires() -> None:
    resources = load_template()["Resources"]
    buckets = {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::S3::Bucket"}
    assert set(buckets) == {"UploadsBucket", "StagingBucket", "HBaseBucket"}
    for name, bucket in buckets.items():
        assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
        assert all(bucket["PublicAccessBlockConfiguration"].values()) and len(bucket["PublicAccessBlockConfiguration"]) == 4, name
    rules = {r["Id"]: r for r in buckets["StagingBucket"]["LifecycleConfiguration"]["Rules"]}
    assert rules["staging-expiry"]["Prefix"] == "staging/" and rules["staging-expiry"]["ExpirationInDays"] == "${StagingRetentionDays}"
    endpoints = {r["Properties"]["ServiceName"] for r in resources.values() if r["Type"] == "AWS::EC2::VPCEndpoint"}
    assert {"com.amazonaws.${AWS::Region}.s3", "com.amazonaws.${AWS::Region}.dynamodb"} <= endpoints


def test_template_names_match_the_settings_and_the_lambda_handler_exists() -> None:
    resources = load_template()["Resources"]
    assert resources["QueryFunction"]["Properties"]["Handler"] == "services.query.lambda_handler.handler"
    import services.query.lambda_handler as module

    assert callable(module.handler)
    # The names spelled out here, not derived from `Settings`: the template and the code must each
    # produce exactly these (a change to either side alone fails).
    queues = {"PFX-ingest", "PFX-compute", "PFX-load", "PFX-publish"}
    dlqs = {f"{q}-dlq" for q in queues}
    by_name = {r["Properties"]["QueueName"].replace("${Prefix}", "PFX"): r for r in resources.values() if r["Type"] == "AWS::SQS::Queue"}
    assert set(by_name) == queues | dlqs
    queue_resource = {r["Properties"]["QueueName"]: name for name, r in resources.items() if r["Type"] == "AWS::SQS::Queue"}
    for queue in queues:
        redrive = by_name[queue]["Properties"]["RedrivePolicy"]
        dlq = queue_resource[f"{queue}-dlq".replace("PFX", "${Prefix}")]
        assert redrive == {"deadLetterTargetArn": "${%s.Arn}" % dlq, "maxReceiveCount": "${MaxReceiveCount}"}, queue
    tables = {resources[t]["Properties"]["TableName"].replace("${Prefix}", "PFX") for t in ("DatasetsTable", "VersionsTable")}
    assert tables == {"PFX-datasets", "PFX-versions"}
    buckets = {resources[b]["Properties"]["BucketName"].replace("${Prefix}", "PFX") for b in ("UploadsBucket", "StagingBucket")}
    assert buckets == {"PFX-uploads", "PFX-staging"}
    settings = Settings(name_prefix="PFX")
    assert {settings.queue_name(role, dead_letter=dead) for role in QUEUE_ROLES for dead in (False, True)} == queues | dlqs
    assert {settings.datasets_table, settings.versions_table} == tables
    assert {settings.uploads_bucket, settings.staging_bucket} == buckets
    # Every object created under uploads/ is announced to the ingest queue.
    (notification,) = resources["UploadsBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert notification["Queue"] == "${IngestQueue.Arn}" and notification["Event"] == "s3:ObjectCreated:*"
    assert notification["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "uploads/"}]
    # Every WIDEVIEWS_* variable the template sets is a setting (a typo would be silently ignored).
    fields = set(Settings.model_fields)
    for resource in resources.values():
        props = resource.get("Properties", {})
        variables = [e["Name"] for c in props.get("ContainerDefinitions", []) for e in c["Environment"]]
        variables += list(props.get("Environment", {}).get("Variables", {}))
        for variable in variables:
            assert variable.startswith("WIDEVIEWS_") and variable[len("WIDEVIEWS_"):].lower() in fields, variable


def test_api_routes_reach_the_query_function_at_the_root_too() -> None:
    resources = load_template()["Resources"]
    routes = {r["Properties"]["RouteKey"]: r["Properties"] for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Route"}
    # `GET /{proxy+}` does not match `/`: the explorer page needs `GET /` beside it, authorised alike.
    assert set(routes) == {"GET /", "GET /{proxy+}", "GET /healthz"}
    assert {r["Target"] for r in routes.values()} == {"integrations/${QueryIntegration}"}
    assert {k: v for k, v in routes["GET /"].items() if k != "RouteKey"} == {k: v for k, v in routes["GET /{proxy+}"].items() if k != "RouteKey"}


def test_readme_deploying_section_names_every_parameter_alarm_and_output() -> None:
    template = load_template()
    readme = (TEMPLATE.parents[1] / "README.md").read_text()
    section = readme.split("## Deploying to AWS", 1)[1].split("\n## ", 1)[0]
    for parameter in template["Parameters"]:
        assert f"`{parameter}`" in section or f"{parameter}=" in section, f"README does not explain parameter {parameter}"
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            name = resource["Properties"]["AlarmName"].replace("${Prefix}", "<prefix>")
            assert f"`{name}`" in section, f"README does not explain alarm {name}"
    for output in template["Outputs"]:
        assert output in section, f"README does not mention output {output}"
