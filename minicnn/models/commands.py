"""`minicnn models` and `minicnn models show NAME`."""
import typer

from minicnn.models.summary import format_summary, summary
from minicnn.models.zoo import all_specs, get_spec
from minicnn.nn.init import shapes_only


def _recipe_line(recipe):
    parts = [f"{recipe.optimizer} lr {recipe.lr:g}", f"batch {recipe.batch_size}", f"{recipe.epochs} ep"]
    if recipe.augmentation != "none":
        parts.append(f"aug {recipe.augmentation}")
    if recipe.dataset != "cifar10":
        parts.append(recipe.dataset)
    return ", ".join(parts)


def _param_count(spec):
    with shapes_only():  # the count needs the shapes, not the random draws
        model = spec.build(100 if spec.recipe.dataset == "cifar100" else 10)
    return sum(p.size for p in model.parameters())


def list_models():
    """Every documented network: name, report id, parameters, recipe, the report's figure."""
    typer.echo(f"{'name':<24} {'id':<4} {'params':>10}  {'recipe':<58} reported")
    for spec in all_specs():
        typer.echo(f"{spec.name:<24} {'/'.join(spec.aliases):<4} {_param_count(spec):>10,}  "
                   f"{_recipe_line(spec.recipe):<58} {spec.reported}")


def show(name: str = typer.Argument(..., help="A network name or report id, e.g. vgg_like or A13.")):
    """The layer table of one network (name, output shape, parameters), like Keras' summary."""
    spec = get_spec(name)
    typer.echo(f"{spec.name} ({'/'.join(spec.aliases)}, report {spec.report}): {spec.description}")
    recipe = spec.recipe
    split = ("the test set doubles as validation" if recipe.split == "test-as-val"
             else "40,000 train / 10,000 validation / 10,000 test")
    typer.echo(f"recipe: {_recipe_line(recipe)}; inputs {recipe.normalization}; {split}; "
               f"checkpoint {recipe.checkpoint}")
    typer.echo(f"reported: {spec.reported}\n")
    model = spec.build(100 if recipe.dataset == "cifar100" else 10)
    typer.echo(format_summary(summary(model)))


def register(app: typer.Typer):
    models_app = typer.Typer(help="The documented networks.", invoke_without_command=True,
                             no_args_is_help=False)

    @models_app.callback()
    def models(ctx: typer.Context):
        """List the documented networks (`minicnn models show NAME` for one's layers)."""
        if ctx.invoked_subcommand is None:
            list_models()

    models_app.command("show")(show)
    app.add_typer(models_app, name="models")
